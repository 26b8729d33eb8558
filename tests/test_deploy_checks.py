"""``manage.py check`` warns about sessions that expire; ``check --deploy``
inspects the live Redis (a private server of this module's own, configured as
each test needs: never the shared one) and the database backend's isolation."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections

from tests.redis_server import RedisUnavailable, _free_port
from triggers.checks_storage import (
    check_deployment,
    check_session_timeout,
    redis_version_problem,
)

WEEK = 7 * 86400


@pytest.fixture(scope="module")
def private_redis() -> Iterator[redis.Redis]:
    """A redis-server of this module's own (CONFIG SET is fine here)."""
    from examples.embedded_redis import start_embedded_redis

    try:
        server = start_embedded_redis(prefix="triggers-deploy-checks-")
    except RedisUnavailable as exc:  # pragma: no cover - make test installs one
        pytest.fail(str(exc))
    client = redis.Redis.from_url(f"{server.url}/0")
    yield client
    client.close()
    server.stop()


def cache_on(host: str, port: int) -> dict[str, Any]:
    """The suite's cache flavour (Django's, django-redis, django-redis-cache)
    pointed at another server."""
    config = dict(django_settings.CACHES["default"])
    if config["BACKEND"] == "redis_cache.RedisCache":
        config.update(LOCATION=f"{host}:{port}", OPTIONS={"DB": 0})
    else:
        config["LOCATION"] = f"redis://{host}:{port}/0"
    return config


@pytest.fixture
def deployment(settings, private_redis) -> redis.Redis:
    """A production-like deployment on the private server: sessions kept
    until deleted, unconfigured fires refused, AOF on, no eviction."""
    port = private_redis.connection_pool.connection_kwargs["port"]
    settings.CACHES = {**django_settings.CACHES, "default": cache_on("127.0.0.1", port)}
    settings.TRIGGERS = {"CACHE": "default", "TIMEOUT": None, "ON_UNCONFIGURED": "raise"}
    private_redis.config_set("maxmemory-policy", "noeviction")
    private_redis.config_set("appendonly", "yes")
    private_redis.config_set("save", "")
    return private_redis


def warnings_of(messages) -> dict[str, Any]:
    found = {m.id: m for m in messages}
    assert len(found) == len(messages), [m.id for m in messages]
    return found


def test_a_production_like_deployment_is_clean(deployment):
    assert check_deployment() == [] and check_session_timeout() == []
    # ... and `manage.py check --deploy` runs the triggers checks (Django's own
    # security warnings aside)
    err = io.StringIO()
    call_command("check", deploy=True, stdout=io.StringIO(), stderr=err)
    assert "triggers." not in err.getvalue()


def test_check_deploy_reports_each_problem_with_its_fix(deployment, settings):
    # Given a Redis that evicts and persists nothing, sessions that expire and
    # fires into unconfigured sessions that are only logged
    deployment.config_set("maxmemory-policy", "allkeys-lru")
    deployment.config_set("appendonly", "no")
    settings.TRIGGERS = {"CACHE": "default", "TIMEOUT": 600}
    # When `manage.py check --deploy` runs
    err = io.StringIO()
    call_command("check", deploy=True, stdout=io.StringIO(), stderr=err)
    text = err.getvalue()
    # Then every problem is there with the setting that fixes it
    for check_id, fix in (
        ("triggers.W101", "Set TRIGGERS['TIMEOUT'] = None"),
        ("triggers.W110", "Set `maxmemory-policy noeviction` in redis.conf"),
        ("triggers.W111", "Set `appendonly yes`"),
        ("triggers.W114", "Set TRIGGERS['ON_UNCONFIGURED'] = 'raise'"),
    ):
        assert check_id in text and fix in text, (check_id, text)
    assert "sessions expire 10 minutes after their last change (TRIGGERS['TIMEOUT'])" in text
    assert "has maxmemory-policy allkeys-lru" in text
    # ... but without --deploy only the timeout is reported
    err = io.StringIO()
    call_command("check", stdout=io.StringIO(), stderr=err)
    assert "triggers.W101" in err.getvalue() and "triggers.W110" not in err.getvalue()


@pytest.mark.parametrize(
    ("policy", "timeout", "warned"),
    [
        ("noeviction", WEEK, False),
        ("volatile-lru", None, False),
        ("volatile-lfu", None, False),
        ("volatile-lru", WEEK, True),
        ("volatile-ttl", None, True),
        ("volatile-random", None, True),
        ("allkeys-lru", None, True),
        ("allkeys-random", None, True),
    ],
)
def test_eviction_policy(deployment, settings, policy, timeout, warned):
    deployment.config_set("maxmemory-policy", policy)
    settings.TRIGGERS = {**settings.TRIGGERS, "TIMEOUT": timeout}
    found = warnings_of(check_deployment())
    assert ("triggers.W110" in found) is warned
    if warned:
        message = found["triggers.W110"]
        assert policy in message.msg and "cache alias 'default'" in message.msg
        assert "maxmemory-policy noeviction" in message.hint
        if policy == "volatile-ttl":
            assert "locks and worker leases first" in message.msg


def test_persistence(deployment):
    # No AOF and no RDB save points: a restart loses everything
    deployment.config_set("appendonly", "no")
    found = warnings_of(check_deployment())
    assert "persists nothing" in found["triggers.W111"].msg
    # RDB snapshots alone are persistence (the hint says what they lose)
    deployment.config_set("save", "3600 1")
    assert check_deployment() == []
    deployment.config_set("save", "")
    # ... and so is the AOF alone
    deployment.config_set("appendonly", "yes")
    assert check_deployment() == []


@pytest.mark.parametrize(
    ("triggers", "caches_timeout", "expected"),
    [
        ({"TIMEOUT": 3600}, None, "1 hours after their last change (TRIGGERS['TIMEOUT'])"),
        ({}, None, "5 minutes after their last change (the default TIMEOUT of cache alias"),
        ({}, 120, "2 minutes after their last change (the default TIMEOUT of cache alias"),
        (
            {"STORAGE_OPTIONS": {"timeout": 30}},
            None,
            "30 seconds after their last change (TRIGGERS['STORAGE_OPTIONS']['timeout'])",
        ),
        ({"TIMEOUT": 86400}, None, None),
        ({"TIMEOUT": None}, None, None),
        ({}, "none", None),
    ],
)
def test_session_timeout_shorter_than_a_day(settings, triggers, caches_timeout, expected):
    caches = {alias: dict(config) for alias, config in django_settings.CACHES.items()}
    if caches_timeout is not None:
        caches["default"]["TIMEOUT"] = None if caches_timeout == "none" else caches_timeout
    settings.CACHES = caches
    settings.TRIGGERS = {"CACHE": "default", **triggers}
    found = check_session_timeout()
    if expected is None:
        assert found == []
        return
    [warning] = found
    assert warning.id == "triggers.W101" and expected in warning.msg
    assert "triggers_cleanup --resolved-older-than 30d" in warning.hint


def test_the_timeout_check_only_concerns_the_cache_backend(settings):
    settings.TRIGGERS = {"STORAGE": "tests.contract_backends.DictStorage"}
    assert check_session_timeout() == []


def test_redis_version():
    assert redis_version_problem("6.0.16") == "Redis 6.0.16 is older than 6.2.0"
    assert redis_version_problem("5") == "cannot read the Redis version '5'"
    assert redis_version_problem("6.2.0") is None
    assert redis_version_problem("7.4.1") is None
    assert redis_version_problem("10.0.0") is None


def test_the_live_server_version_is_read(deployment):
    # The private server is the one make test installs (7.x): no W112
    version = deployment.info("server")["redis_version"]
    assert redis_version_problem(version) is None
    assert "triggers.W112" not in warnings_of(check_deployment())


def test_an_unreachable_redis_is_reported_not_raised(settings):
    settings.CACHES = {
        **django_settings.CACHES,
        "default": cache_on("127.0.0.1", _free_port()),
    }
    settings.TRIGGERS = {"CACHE": "default", "TIMEOUT": None, "ON_UNCONFIGURED": "raise"}
    [warning] = check_deployment()
    assert warning.id == "triggers.W113"
    assert "could not inspect the Redis server of cache alias 'default'" in warning.msg
    assert "ConnectionError" in warning.msg


@pytest.mark.parametrize("policy", ["warn", "record", None])
def test_on_unconfigured_other_than_raise(deployment, settings, policy):
    triggers = {"CACHE": "default", "TIMEOUT": None}
    if policy is not None:
        triggers["ON_UNCONFIGURED"] = policy
    settings.TRIGGERS = triggers
    [warning] = check_deployment()
    assert warning.id == "triggers.W114"
    assert f"is {policy or 'warn'!r}" in warning.msg


# -- the database backend -------------------------------------------------------------

ALIAS = "retention_checks"


@pytest.fixture
def postgres_alias(monkeypatch, django_db_blocker) -> Iterator[dict[str, Any]]:
    """A database alias on the machine's PostgreSQL (maintenance database,
    read-only use: SHOW), whose OPTIONS a test may change."""
    server: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "OPTIONS": {},
    }
    # configure_settings() fills in Django's defaults (it wants a 'default').
    full = connections.configure_settings({"default": server, ALIAS: server})[ALIAS]
    monkeypatch.setitem(connections.settings, ALIAS, full)
    with django_db_blocker.unblock():
        yield connections.settings[ALIAS]
        connections[ALIAS].close()
    del connections[ALIAS]


def use_database(settings) -> None:
    settings.TRIGGERS = {
        "STORAGE": "database",
        "STORAGE_OPTIONS": {"database": ALIAS},
        "ON_UNCONFIGURED": "raise",
    }


@pytest.mark.parametrize(
    "level",
    [psycopg.IsolationLevel.REPEATABLE_READ, psycopg.IsolationLevel.SERIALIZABLE],
)
def test_database_isolation_from_the_settings(settings, postgres_alias, level):
    use_database(settings)
    postgres_alias["OPTIONS"]["isolation_level"] = level
    [warning] = check_deployment()
    assert warning.id == "triggers.W115"
    assert f"database {ALIAS!r} runs transactions at {level.name.replace('_', ' ')}" in warning.msg
    assert "Use READ COMMITTED" in warning.hint
    # The Redis checks do not apply: no Redis holds the sessions
    postgres_alias["OPTIONS"]["isolation_level"] = psycopg.IsolationLevel.READ_COMMITTED
    assert check_deployment() == []


def test_database_isolation_from_the_server(settings, postgres_alias):
    use_database(settings)
    # Given a server whose sessions default to SERIALIZABLE (for this alias)
    postgres_alias["OPTIONS"]["options"] = "-c default_transaction_isolation=serializable"
    # Then the server is asked only for the aliases `check --database` names
    assert check_deployment(databases=None) == []
    [warning] = check_deployment(databases=[ALIAS])
    assert warning.id == "triggers.W115" and "SERIALIZABLE" in warning.msg
    # ... and PostgreSQL's own default is fine
    connections[ALIAS].close()
    del postgres_alias["OPTIONS"]["options"]
    assert check_deployment(databases=[ALIAS]) == []


# -- TRIGGERS['REDIS_CLIENT'] -------------------------------------------------------


def not_a_client() -> object:
    return object()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("memcached://127.0.0.1:11211", "unknown scheme 'memcached'"),
        ("tests.test_deploy_checks.no_such_factory", "cannot be imported"),
        ("tests.test_deploy_checks.WEEK", "must be a redis:// URL or the dotted path"),
        (42, "must be a redis:// URL or the dotted path"),
    ],
)
def test_a_redis_client_setting_that_names_no_client_is_refused(settings, value, why):
    from triggers.checks_storage import check_redis_client
    from triggers.exceptions import ConfigurationError
    from triggers.storages.cache import CacheStorageBackend

    settings.TRIGGERS = {"CACHE": "default", "REDIS_CLIENT": value}
    # manage.py check says so, naming the setting
    [error] = check_redis_client()
    assert error.id == "triggers.E101" and "TRIGGERS['REDIS_CLIENT']" in error.msg
    assert why in error.msg and "redis+cluster://" in error.hint
    # ... and so does building a storage
    with pytest.raises(ConfigurationError, match=r"REDIS_CLIENT") as caught:
        CacheStorageBackend("bad-client")
    assert caught.value.directive == "REDIS_CLIENT"


def test_a_factory_must_return_a_redis_client(settings):
    from triggers.exceptions import ConfigurationError
    from triggers.storages.cache import CacheStorageBackend

    settings.TRIGGERS = {"REDIS_CLIENT": "tests.test_deploy_checks.not_a_client"}
    with pytest.raises(ConfigurationError, match="returned object, not a redis-py client"):
        CacheStorageBackend("bad-factory")


@pytest.mark.redis_cluster  # builds a cluster client (none in redis-py 3)
def test_a_brace_in_the_key_prefix_is_reported_for_a_cluster(settings):
    from triggers.checks_storage import check_redis_client

    caches = {alias: dict(config) for alias, config in django_settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = "{shop}"
    settings.CACHES = caches
    # (the check connects to nothing: no cluster listens on port 1)
    settings.TRIGGERS = {"CACHE": "default", "REDIS_CLIENT": "redis+cluster://127.0.0.1:1"}
    [warning] = check_redis_client()
    assert warning.id == "triggers.W116" and "one hash slot" in warning.msg
    # ... a single Redis does not care
    settings.TRIGGERS = {"CACHE": "default", "REDIS_CLIENT": "redis://127.0.0.1:1"}
    assert check_redis_client() == []


@pytest.mark.redis_cluster  # builds a cluster client (none in redis-py 3)
def test_an_unreachable_cluster_is_reported_not_raised(settings):
    settings.TRIGGERS = {"CACHE": "default", "REDIS_CLIENT": "redis+cluster://127.0.0.1:1"}
    found = warnings_of(check_deployment())
    assert "could not inspect" in found["triggers.W113"].msg
    assert check_session_timeout() == []
