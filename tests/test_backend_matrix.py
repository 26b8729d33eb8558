"""Whichever cache backend this run uses (``TRIGGERS_TEST_CACHE_BACKEND``, set
per tox env), the session lock finds that cache's Redis client and locks in
Redis -- not the process-local fallback, which would let two servers run the
same session at once."""

from __future__ import annotations

import os

import redis
from django.conf import settings
from django.core.cache import caches

from triggers.locking import SessionLock, redis_client_for_cache
from triggers.storages.cache import CacheStorageBackend

EXPECTED_BACKEND = {
    "django": "django.core.cache.backends.redis.RedisCache",
    "django-redis": "django_redis.cache.RedisCache",
    "django-redis-cache": "redis_cache.RedisCache",
}


def test_this_run_uses_the_cache_backend_its_env_names():
    wanted = os.environ.get("TRIGGERS_TEST_CACHE_BACKEND", "django")
    assert settings.CACHES["default"]["BACKEND"] == EXPECTED_BACKEND[wanted]


def test_the_lock_client_is_the_caches_own_redis_connection():
    # Given the default cache of this run
    cache = caches["default"]
    # When the library looks for a Redis client behind it
    client = redis_client_for_cache(cache)
    # Then it finds one, on the server and database the cache uses
    assert isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("db", 0) == settings.REDIS_CACHE_DB
    assert client.ping()


def test_a_held_session_lock_is_visible_to_every_process(redis_client, unique_uid):
    # Given a session on the default cache
    storage = CacheStorageBackend(unique_uid)
    assert storage.uses_redis
    # When it holds its lock
    with storage.acquire_lock() as session:
        lock = session.lock  # the block yields the storage; its lock is .lock
        # Then the lock is a Redis key any other process's client sees
        assert isinstance(lock, SessionLock)
        assert redis_client.exists(lock.key) == 1
    # ... and it is gone once released
    assert redis_client.exists(lock.key) == 0
