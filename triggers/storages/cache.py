"""Session state in a Django cache: the documented ``'cache'`` backend.

:class:`CacheStorageBackend` is two small backends behind one name. On a
Redis cache alias (Django's built-in ``RedisCache``, django-redis,
django-redis-cache) or with ``TRIGGERS['REDIS_CLIENT']`` it is
:class:`~triggers.storages.redis.RedisStorageBackend`, the indexed tier; on
any other Django cache it is :class:`CacheDocumentBackend`, the document
tier: the session is one JSON document, written back only if its version is
unchanged (see :mod:`triggers.storages.document`).
"""

from __future__ import annotations

import functools
import json
import uuid
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from django.core.cache import caches

from .. import conf
from ..exceptions import ConfigurationError
from ..locking import redis_client_for_cache, with_timeouts
from .base import BaseTriggerStorage
from .document import DocumentStorage
from .session_index import DocumentSessionIndex, RedisSessionIndex, clock, for_cache

__all__ = [
    "CacheDocumentBackend",
    "CacheStorageBackend",
    "check_redis_client_setting",
    "redis_client",
]

DEFAULT: Any = object()
#: id of a cache object -> (weak reference to it, its Redis client or
#: ``None``). Every storage built looks its cache up here; a
#: ``WeakKeyDictionary`` would make a weak reference to ask with each time.
#: The reference's callback drops the entry when the cache goes.
_CLIENTS: dict[int, tuple[weakref.ref[Any], Any]] = {}
#: ``TRIGGERS['REDIS_CLIENT']`` URL schemes that ask for a Redis Cluster
#: client, and the redis-py scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_PLAIN_SCHEMES = ("redis", "rediss", "unix")
#: Clients built from ``TRIGGERS['REDIS_CLIENT']``, by setting value: one
#: per process (a cluster client discovers the cluster when it is built).
_SETTING_CLIENTS: dict[Any, Any] = {}


def _bad_client(value: Any, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"TRIGGERS['REDIS_CLIENT'] = {value!r} {why}", directive="REDIS_CLIENT"
    )


def check_redis_client_setting(value: Any) -> Any:
    """Validate ``TRIGGERS['REDIS_CLIENT']`` without connecting: return the
    factory it names (``None`` for a URL); raise
    :class:`~triggers.exceptions.ConfigurationError` naming the setting."""
    if isinstance(value, str) and "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme in CLUSTER_SCHEMES:
            try:
                import redis.cluster  # noqa: F401
            except ImportError:
                raise _bad_client(
                    value, "asks for a Redis Cluster: that needs redis-py 4.1 or later"
                ) from None
        elif scheme not in _PLAIN_SCHEMES:
            raise _bad_client(
                value,
                f"has the unknown scheme {scheme!r}: use redis://, rediss:// or unix:// for one "
                "server, redis+cluster:// or rediss+cluster:// for a Redis Cluster",
            )
        return None
    factory = value
    if isinstance(value, str):
        from django.utils.module_loading import import_string

        try:
            factory = import_string(value)
        except ImportError as exc:
            raise _bad_client(value, f"cannot be imported ({exc})") from None
    if not callable(factory):
        raise _bad_client(
            value, "must be a redis:// URL or the dotted path of a callable returning a client"
        )
    return factory


def redis_client(value: Any) -> Any:
    """The client ``TRIGGERS['REDIS_CLIENT']`` names, built once per process:
    a URL (``redis+cluster://host:port`` for a
    :class:`redis.cluster.RedisCluster`; ``TRIGGERS['REDIS_TIMEOUT']`` bounds
    its sockets unless the URL says) or a callable's result (kept as built)."""
    key = value if isinstance(value, str) else id(value)
    client = _SETTING_CLIENTS.get(key)
    if client is not None:
        return client
    factory = check_redis_client_setting(value)
    if factory is not None:
        client = factory()
        if not all(hasattr(client, a) for a in ("pipeline", "register_script", "execute_command")):
            raise _bad_client(value, f"returned {type(client).__name__}, not a redis-py client")
    else:
        import redis

        timeout = conf.get("REDIS_TIMEOUT")
        bounds: dict[str, float] = {}
        if timeout is not None:
            bounds = {"socket_timeout": float(timeout), "socket_connect_timeout": float(timeout)}
        scheme, rest = value.split("://", 1)
        if scheme.lower() in CLUSTER_SCHEMES:
            from redis.cluster import RedisCluster

            url = f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}"
            client = RedisCluster.from_url(url, **bounds)
        else:
            client = redis.Redis.from_url(value, **bounds)
    _SETTING_CLIENTS[key] = client
    return client


def _client_for(cache: Any, setting: Any = None) -> Any | None:
    """The Redis client of ``cache`` (``setting``: ``TRIGGERS['REDIS_CLIENT']``)."""
    if setting:
        # State and locks go on that client whatever the cache alias.
        return redis_client(setting)
    key = id(cache)
    found = _CLIENTS.get(key)
    if found is not None and found[0]() is cache:
        return found[1]
    client = with_timeouts(redis_client_for_cache(cache), conf.get("REDIS_TIMEOUT"))
    try:
        ref = weakref.ref(cache, functools.partial(_forget_client, key))
    except TypeError:
        return client  # a cache that cannot be weakly referenced is looked up each time
    _CLIENTS[key] = (ref, client)
    return client


def _forget_client(key: int, ref: weakref.ref[Any]) -> None:
    """Drop the entry of a cache that is gone (unless its id already names
    another cache's)."""
    found = _CLIENTS.get(key)
    if found is not None and found[0] is ref:
        del _CLIENTS[key]


def _cache(alias: str | None, user: Any = None) -> tuple[str, Any]:
    """The cache named ``alias`` (default: ``TRIGGERS['CACHE']``; ``user``:
    the ``TRIGGERS`` setting when the caller has read it already)."""
    if alias:
        name = alias
    elif user is not None:
        name = str(user["CACHE"] if "CACHE" in user else conf.DEFAULTS["CACHE"])
    else:
        name = str(conf.get("CACHE"))
    try:
        return name, caches[name]
    except Exception as exc:
        raise ConfigurationError(
            f"cache alias {name!r} is not configured in CACHES ({exc})", directive="CACHE"
        ) from None


_COMBINED: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def _combined(cls: type[Any], kind: type[Any]) -> type[Any]:
    """``cls`` (``CacheStorageBackend`` or a project's subclass) as ``kind``."""
    if cls is CacheStorageBackend:
        return kind
    found = _COMBINED.get((cls, kind))
    if found is None:
        attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        found = _COMBINED[(cls, kind)] = type(cls.__name__, (cls, kind), attrs)
    return found


class CacheStorageBackend(BaseTriggerStorage):
    """Keeps sessions in the Django cache ``cache`` (default:
    ``TRIGGERS['CACHE']``) for ``timeout`` seconds after their last change
    (default: ``TRIGGERS['TIMEOUT']``, else the cache's own default;
    ``None`` keeps them forever).

    Constructing it gives the indexed Redis backend on a cache with a Redis
    client and :class:`CacheDocumentBackend` on any other."""

    name = "cache"
    #: ``'indexed'`` (needs a Redis client) or ``'document'``: set by the
    #: two classes behind this name, which register themselves.
    kind: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type[CacheStorageBackend]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind and "kind" in cls.__dict__:
            CacheStorageBackend._kinds.setdefault(cls.kind, cls)

    @classmethod
    def kinds(cls) -> tuple[type[CacheStorageBackend], ...]:
        """The classes behind this name (each is rebuilt by it)."""
        return tuple(CacheStorageBackend._kinds.values())

    def __init__(self, uid: str, cache: str | None = None, timeout: Any = DEFAULT) -> None:
        super().__init__(uid)
        user = conf.user_settings()  # read once: a web request builds a storage per fire
        self.cache_name, self.cache = _cache(cache, user)
        if timeout is DEFAULT:
            timeout = user["TIMEOUT"] if "TIMEOUT" in user else self.cache.default_timeout
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(
                f"session timeout must be positive seconds or None, not {timeout!r}",
                directive="TIMEOUT",
            )
        self.timeout = timeout
        self._redis = _client_for(self.cache, user.get("REDIS_CLIENT"))
        # Become the backend this cache calls for (a project's subclass of
        # this name keeps its own methods on top of it).
        kind = self._kinds["document" if self._redis is None else "indexed"]
        if not isinstance(self, kind):
            if self.kind:
                raise ConfigurationError(
                    f"{type(self).__name__} needs a Redis cache; cache alias "
                    f"{self.cache_name!r} has no Redis client",
                    directive="CACHE",
                )
            self.__class__ = _combined(type(self), kind)
        self._prepare()

    def _prepare(self) -> None:
        """Set up what this kind of backend needs once the cache is known
        (the document's key here; the indexed backend names its own)."""
        # The length prefix keeps keys unambiguous whatever the uid contains.
        self._base = str(self.cache.make_key(f"triggers:{len(self.uid)}:{self.uid}"))

    @property
    def uses_redis(self) -> bool:
        return self.kind == "indexed"

    @property
    def redis_client(self) -> Any | None:
        """The redis-py client that holds the state (``None`` on other
        caches); the deployment checks inspect its server."""
        return self._redis

    def get_init_kwargs(self) -> dict[str, Any]:
        return {"cache": self.cache_name, "timeout": self.timeout}

    # == session index (retention; see session_index.py) ======================
    @classmethod
    def _session_index(cls, options: Mapping[str, Any]) -> RedisSessionIndex | DocumentSessionIndex:
        # A storage for no particular session resolves the cache, its Redis
        # client and the timeout exactly as a session's storage would.
        probe = CacheStorageBackend("triggers-session-index", **options)
        return for_cache(
            probe.cache, probe._redis, lambda uid: CacheStorageBackend(uid, **options)._base
        )

    @classmethod
    def list_sessions(
        cls,
        options: Mapping[str, Any],
        *,
        prefix: str = "",
        offset: int = 0,
        limit: int | None = None,
        older_than: datetime | None = None,
    ) -> list[tuple[str, datetime]]:
        return cls._session_index(options).listing(prefix, offset, limit, older_than)

    @classmethod
    def count_sessions(cls, options: Mapping[str, Any], *, prefix: str = "") -> int:
        return int(cls._session_index(options).count(prefix))

    # == end of session index ==================================================


class CacheDocumentBackend(CacheStorageBackend, DocumentStorage):
    """The document tier on any Django cache: the session is one JSON value
    ``{..., "version": token}``. A write first claims the version it read
    with ``cache.add()`` (atomic on every shared Django cache: only one
    writer gets a given version), checks it is still current, then sets the
    new document under a new random version. A claim expires after
    ``TRIGGERS['LOCK_EXPIRE']`` seconds, so a writer stopped longer than
    that between claim and write could overwrite a newer document -- the
    same bound as the Redis lock's expiry."""

    kind = "document"

    def read(self) -> tuple[dict[str, Any] | None, Any]:
        raw = self.cache.get(self._base)
        if not raw:
            return None, ""
        document = json.loads(raw)
        return document, document.pop("version", "")

    def write(self, document: dict[str, Any] | None, expected_version: Any) -> bool:
        claim = f"{self._base}:claim:{expected_version}"
        if not self.cache.add(claim, 1, timeout=int(conf.get("LOCK_EXPIRE"))):
            return False
        if self.read()[1] != expected_version:  # an older claim had expired
            return False
        index = DocumentSessionIndex(self.cache)
        if document is None:
            self.cache.delete_many([self._base, f"{self._base}:claim:"])
            index.forget(self.uid)
            return True
        # "activity" feeds the session index (retention), on its clock.
        stored = {**document, "activity": clock(), "version": uuid.uuid4().hex}
        self.cache.set(self._base, json.dumps(stored, separators=(",", ":")), self.timeout)
        index.note(self.uid)  # the session index (retention)
        return True
