"""System checks on where sessions live: how long they last
(``manage.py check``) and whether the live store keeps them
(``manage.py check --deploy``).

=================  ===========================================================
id                 problem
=================  ===========================================================
``triggers.W101``  sessions expire after less than a day (``TIMEOUT``, else
                   the cache alias's default, Django's being 300 s)
``triggers.W110``  Redis may evict session keys or locks (``maxmemory-policy``)
``triggers.W111``  Redis persists nothing (no AOF, no RDB save points): a
                   restart loses every session
``triggers.W112``  the Redis server is older than the commands triggers uses
``triggers.W113``  the Redis server could not be inspected
``triggers.W114``  ``ON_UNCONFIGURED`` is not ``'raise'``
``triggers.W115``  the database backend's transactions are not READ COMMITTED
``triggers.E101``  ``REDIS_CLIENT`` is not a URL or the path of a callable
``triggers.W116``  on a Redis Cluster, the cache's key prefix has a ``{``: the
                   keys of a session would not share one hash slot
=================  ===========================================================

W101, E101 and W116 are plain checks; the others run with ``--deploy``
only (tag ``deploy``), and W115 reads the server's own default only for the
aliases given with ``--database``. On a Redis Cluster, W110-W113 inspect
every master.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from . import conf
from .exceptions import ConfigurationError

__all__ = [
    "MIN_REDIS_VERSION",
    "check_deployment",
    "check_redis_client",
    "check_session_timeout",
    "redis_version_problem",
]

#: A day: sessions meant to wait "days, weeks, even months" must not expire sooner.
MIN_TIMEOUT = 86400
#: ZMSCORE (the session index) needs Redis 6.2.
MIN_REDIS_VERSION = (6, 2, 0)
#: Policies that pick among keys with an expiry, least used first: they
#: leave keys without one (sessions with ``TIMEOUT = None``) alone and are
#: unlikely to pick a lock that is held right now.
_VOLATILE_BY_USE = ("volatile-lru", "volatile-lfu")


def _storage() -> tuple[type, dict[str, Any]] | None:
    from .storages import storage_backends

    try:
        cls = storage_backends.get_class(conf.get("STORAGE"))
    except (KeyError, ImportError, TypeError, AttributeError):
        return None  # triggers.E002 reports it
    return cls, dict(conf.get("STORAGE_OPTIONS") or {})


def _unreachable() -> tuple[type[BaseException], ...]:
    """What building a client raises when its server does not answer (a
    Redis Cluster client asks the cluster for its slots when built)."""
    from redis import exceptions

    cluster = getattr(exceptions, "RedisClusterException", exceptions.RedisError)
    return (exceptions.RedisError, cluster, OSError)


def _cache_storage(failures: list[str] | None = None) -> Any | None:
    """A cache storage built from the settings (no I/O but a Redis Cluster
    client's discovery), or ``None`` if the storage is another backend, its
    settings are broken (E002/E003/E101) or its cluster did not answer (the
    reason is added to ``failures``)."""
    from .storages.cache import CacheStorageBackend

    found = _storage()
    if found is None or not issubclass(found[0], CacheStorageBackend):
        return None
    cls, options = found
    try:
        return cls("triggers-checks", **options)
    except (ConfigurationError, TypeError, ValueError):
        return None
    except _unreachable() as exc:
        if failures is not None:
            failures.append(f"{type(exc).__name__}: {exc}")
        return None


def _describe(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    if seconds >= 60:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


@register("triggers")
def check_session_timeout(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W101: the effective session timeout is shorter than a day."""
    storage = _cache_storage()
    if storage is None or storage.timeout is None or storage.timeout >= MIN_TIMEOUT:
        return []
    if "timeout" in (conf.get("STORAGE_OPTIONS") or {}):
        source = "TRIGGERS['STORAGE_OPTIONS']['timeout']"
    elif conf.has("TIMEOUT"):
        source = "TRIGGERS['TIMEOUT']"
    else:
        source = f"the default TIMEOUT of cache alias {storage.cache_name!r}"
    return [
        Warning(
            f"sessions expire {_describe(storage.timeout)} after their last change ({source}): "
            "a workflow that waits longer for its next trigger loses its state and runs nothing",
            hint="Set TRIGGERS['TIMEOUT'] = None (keep sessions until deleted) and remove old "
            "ones with `manage.py triggers_cleanup --resolved-older-than 30d` on a schedule; "
            "see the Retention page of the docs.",
            obj="TRIGGERS",
            id="triggers.W101",
        )
    ]


def _is_cluster(client: Any) -> bool:
    return callable(getattr(client, "get_primaries", None))


@register("triggers")
def check_redis_client(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E101: ``REDIS_CLIENT`` names no client; W116: a cluster whose session
    keys would not share a hash slot."""
    from .storages.cache import check_redis_client_setting

    value = conf.get("REDIS_CLIENT")
    if not value:
        return []
    try:
        check_redis_client_setting(value)
    except ConfigurationError as exc:
        return [
            Error(
                str(exc),
                hint="Use a redis:// URL (redis+cluster://host:port for a Redis Cluster) or "
                "the dotted path of a callable that returns a redis-py client.",
                obj="TRIGGERS",
                id="triggers.E101",
            )
        ]
    from .storages.cache import CLUSTER_SCHEMES

    scheme = value.split("://", 1)[0].lower() if isinstance(value, str) else ""
    found = _storage()
    if scheme not in CLUSTER_SCHEMES or found is None:
        return []
    from django.core.cache import InvalidCacheBackendError, caches

    options = found[1]
    alias = options.get("cache") or conf.get("CACHE")
    try:
        prefix = str(caches[alias].make_key("triggers"))
    except InvalidCacheBackendError:
        return []  # E003 reports it
    if "{" not in prefix:
        return []
    return [
        Warning(
            f"cache alias {alias!r} makes keys like {prefix!r}: on a Redis Cluster the '{{' "
            "of its key prefix becomes the hash tag of every session key, so all sessions "
            "share one hash slot (one master) instead of spreading over the cluster",
            hint="Remove '{' and '}' from the cache's KEY_PREFIX (and KEY_FUNCTION).",
            obj="TRIGGERS",
            id="triggers.W116",
        )
    ]


def redis_version_problem(version: str) -> str | None:
    """Why a Redis server of ``version`` is too old, or ``None``."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    if len(parts) < 2:
        return f"cannot read the Redis version {version!r}"
    found = tuple(parts + [0] * (3 - len(parts)))
    if found < MIN_REDIS_VERSION:
        return f"Redis {version} is older than {'.'.join(map(str, MIN_REDIS_VERSION))}"
    return None


def _redis_problems(client: Any, timeout: float | None, where: str) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    try:
        info = client.info()
    except Exception as exc:  # any failure is reported, never raised, by a check
        return [
            Warning(
                f"could not inspect the Redis server of {where}: {type(exc).__name__}: {exc}",
                hint="Run `manage.py check --deploy` where the Redis server is reachable, "
                "and allow INFO and CONFIG GET for its user.",
                obj="TRIGGERS",
                id="triggers.W113",
            )
        ]
    version = str(info.get("redis_version", ""))
    problem = redis_version_problem(version)
    if problem:
        found.append(
            Warning(
                f"{problem} ({where}); triggers' scripts and session index need "
                f"{'.'.join(map(str, MIN_REDIS_VERSION))} or newer",
                hint="Upgrade the Redis server.",
                obj="TRIGGERS",
                id="triggers.W112",
            )
        )
    policy = str(info.get("maxmemory_policy", ""))
    # volatile-lru/lfu never pick keys without an expiry (TIMEOUT None).
    safe = policy == "noeviction" or (policy in _VOLATILE_BY_USE and timeout is None)
    if policy and not safe:
        if policy in _VOLATILE_BY_USE:
            what = "session keys (TIMEOUT gives them an expiry)"
        elif policy == "volatile-ttl":
            what = "session locks and worker leases first (they expire soonest)"
        elif policy.startswith("volatile-"):
            what = "session locks, worker leases and any session key with an expiry"
        else:
            what = "any key, session state and locks included"
        found.append(
            Warning(
                f"Redis ({where}) has maxmemory-policy {policy}: under memory pressure it "
                f"evicts {what}, and a session with a key missing is lost",
                hint="Set `maxmemory-policy noeviction` in redis.conf (writes then fail "
                "loudly when memory is full), or keep sessions on a Redis of their own. "
                "volatile-lru/volatile-lfu are acceptable only with TRIGGERS['TIMEOUT'] "
                "= None.",
                obj="TRIGGERS",
                id="triggers.W110",
            )
        )
    aof = str(info.get("aof_enabled", "0")) == "1"
    if not aof:
        try:
            reply = client.config_get("save")
            save = reply.get("save", reply.get(b"save", ""))
            save = save.decode() if isinstance(save, bytes) else str(save)
        except Exception as exc:  # CONFIG is often disabled on managed Redis
            found.append(
                Warning(
                    f"Redis ({where}) has AOF off and its RDB save points could not be read "
                    f"({type(exc).__name__}: {exc})",
                    hint="Make sure the server persists (appendonly yes, or RDB save points); "
                    "without persistence a restart loses every session.",
                    obj="TRIGGERS",
                    id="triggers.W113",
                )
            )
        else:
            if not save.strip():
                found.append(
                    Warning(
                        f"Redis ({where}) persists nothing (appendonly no, no save points): "
                        "a restart loses every session",
                        hint="Set `appendonly yes` (and `appendfsync everysec`) in redis.conf; "
                        "RDB save points alone lose the writes since the last snapshot.",
                        obj="TRIGGERS",
                        id="triggers.W111",
                    )
                )
    return found


def _isolation_problems(databases: Iterable[str] | None) -> list[CheckMessage]:
    from django.db import connections

    alias = (conf.get("STORAGE_OPTIONS") or {}).get("database") or "default"
    if alias not in connections.settings:
        return []  # the backend's own error names it
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return []  # the backend refuses other databases itself
    configured = (connection.settings_dict.get("OPTIONS") or {}).get("isolation_level")
    level = None
    if configured is not None:
        # Django reads an int as the installed driver's isolation constant.
        from django.db.backends.postgresql.psycopg_any import IsolationLevel

        try:
            level = IsolationLevel(int(configured)).name
        except (TypeError, ValueError):
            level = str(configured).upper().replace(" ", "_")
    elif databases is not None and alias in databases:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW transaction_isolation")
                level = str(cursor.fetchone()[0]).upper().replace(" ", "_")
        except Exception as exc:  # reported, never raised, by a check
            return [
                Warning(
                    f"could not read the transaction isolation of database {alias!r}: {exc}",
                    hint="Run `manage.py check --deploy --database "
                    f"{alias}` where the database is reachable.",
                    obj="TRIGGERS",
                    id="triggers.W115",
                )
            ]
    if level is None or level in ("READ_COMMITTED", "READ_UNCOMMITTED"):
        # PostgreSQL runs READ UNCOMMITTED as READ COMMITTED.
        return []
    return [
        Warning(
            f"database {alias!r} runs transactions at {level.replace('_', ' ')}: concurrent "
            "fires into one session then fail with serialization errors instead of waiting "
            "for the session row lock",
            hint=f"Use READ COMMITTED (PostgreSQL's default) for alias {alias!r}: remove "
            "OPTIONS['isolation_level'] or set it to READ COMMITTED, and check the server's "
            "default_transaction_isolation.",
            obj="TRIGGERS",
            id="triggers.W115",
        )
    ]


@register("triggers", "deploy", deploy=True)
def check_deployment(
    app_configs: Any = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W110-W115: the live store and the settings a production site wants."""
    found: list[CheckMessage] = []
    policy = conf.get("ON_UNCONFIGURED") or "warn"
    if policy != "raise":
        found.append(
            Warning(
                f"TRIGGERS['ON_UNCONFIGURED'] is {policy!r}: a fire into a session with no "
                "configuration (a mistyped uid, a lost session) is recorded and runs nothing",
                hint="Set TRIGGERS['ON_UNCONFIGURED'] = 'raise' so such a fire raises "
                "SessionNotConfiguredError and stores nothing.",
                obj="TRIGGERS",
                id="triggers.W114",
            )
        )
    failures: list[str] = []
    storage = _cache_storage(failures)
    for failure in failures:
        found.append(
            Warning(
                f"could not inspect the Redis server of TRIGGERS['REDIS_CLIENT']: {failure}",
                hint="Run `manage.py check --deploy` where the Redis server is reachable.",
                obj="TRIGGERS",
                id="triggers.W113",
            )
        )
    if storage is not None and storage.redis_client is not None:
        where = f"cache alias {storage.cache_name!r}"
        if conf.get("REDIS_CLIENT"):
            where = "TRIGGERS['REDIS_CLIENT']"
        client = storage.redis_client
        if _is_cluster(client):
            # Each master has its own memory, policy and persistence.
            for node in client.get_primaries():
                found += _redis_problems(
                    node.redis_connection, storage.timeout, f"{where}, master {node.name}"
                )
        else:
            found += _redis_problems(client, storage.timeout, where)
    found_storage = _storage()
    if found_storage is not None and getattr(found_storage[0], "name", "") == "database":
        found += _isolation_problems(databases)
    return found
