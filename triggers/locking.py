"""Session locks: python-redis-lock locks with a short expiry, renewed by one
background thread per process while held; a process-local fallback for
caches that are not Redis.

A process that dies holding a lock blocks its session for at most
``LOCK_EXPIRE`` seconds plus one poll interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

import redis_lock

from .exceptions import LockTimeoutError

logger = logging.getLogger(__name__)

#: Longest single wait on the lock's release signal before trying again; a
#: waiter notices an expired lock at most this long after it expired.
LOCK_POLL = 1


class Renewable(Protocol):
    def renew(self) -> None: ...


class _Renewer:
    """One daemon thread per process that renews every held lock and lease
    well before it expires (python-redis-lock's own renewal starts a thread
    per acquisition, which costs more than the rest of a fire)."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], float, float]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, item: Renewable, interval: float) -> None:
        with self._cond:
            self._items[id(item)] = (weakref.ref(item), interval, time.monotonic() + interval)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="triggers-renewer", daemon=True
                )
                self._thread.start()
            else:
                self._cond.notify()

    def remove(self, item: Renewable) -> None:
        with self._cond:
            self._items.pop(id(item), None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._items:
                    self._cond.wait(timeout=30)
                    if not self._items:
                        continue
                now = time.monotonic()
                due = []
                next_due = now + 60
                for key, (ref, interval, when) in list(self._items.items()):
                    if when <= now:
                        due.append(ref)
                        self._items[key] = (ref, interval, now + interval)
                        next_due = min(next_due, now + interval)
                    else:
                        next_due = min(next_due, when)
            for ref in due:
                item = ref()
                if item is None:
                    continue
                try:
                    item.renew()
                except Exception:  # a failed renewal shows up as a lost lock later
                    logger.warning("could not renew %r", item, exc_info=True)
            with self._cond:
                delay = max(0.0, next_due - time.monotonic())
                if delay:
                    self._cond.wait(timeout=delay)

    def _after_fork(self) -> None:
        # Threads do not survive fork(); locks held by the parent are the
        # parent's business.
        self._items = {}
        self._cond = threading.Condition()
        self._thread = None


renewer = _Renewer()
os.register_at_fork(after_in_child=renewer._after_fork)


class SessionLock(redis_lock.Lock):
    """A python-redis-lock lock that knows locally whether it holds itself.

    The base class asks Redis (one round trip) before every acquisition just
    to refuse re-acquiring a held lock; a fresh lock object never holds, so we
    keep that fact in memory.
    """

    _acquired = False

    def __init__(self, client: Any, name: str, expire: int, uid: str) -> None:
        super().__init__(client, name, expire=max(1, int(expire)), strict=False)
        self.uid = uid

    @property
    def _held(self) -> bool:  # type: ignore[override]
        return self._acquired

    @property
    def key(self) -> str:
        return self._name

    @property
    def signal_key(self) -> str:
        return self._signal

    @property
    def signal_expire(self) -> int:
        return int(self._signal_expire)

    def acquire_within(self, timeout: float) -> None:
        """Block until acquired or raise :class:`LockTimeoutError`."""
        deadline = time.monotonic() + timeout
        while True:
            if self.acquire(blocking=True, timeout=LOCK_POLL):
                self._acquired = True
                assert self._expire is not None
                renewer.add(self, self._expire / 3)
                return
            if time.monotonic() >= deadline:
                raise LockTimeoutError(self.uid, timeout)

    def renew(self) -> None:
        if self._acquired:
            self.extend()

    def forget(self) -> None:
        """Stop renewing after the lock was released by a commit script."""
        renewer.remove(self)
        self._acquired = False

    def release(self) -> None:
        self.forget()
        super().release()


class LocalLock:
    """Process-local stand-in for caches that are not Redis: correct between
    threads, but not between processes (``manage.py check`` warns)."""

    _registry: dict[str, threading.Lock] = {}
    _registry_lock = threading.Lock()
    token = None

    def __init__(self, name: str, uid: str) -> None:
        with self._registry_lock:
            self._lock = self._registry.setdefault(name, threading.Lock())
        self.uid = uid

    def acquire_within(self, timeout: float) -> None:
        if not self._lock.acquire(timeout=timeout):
            raise LockTimeoutError(self.uid, timeout)

    def forget(self) -> None:
        self._lock.release()

    def release(self) -> None:
        self._lock.release()


def redis_client_for_cache(cache: Any) -> Any | None:
    """The redis-py client behind a Django cache, or ``None`` if it has none.

    Knows Django's built-in RedisCache, django-redis and the legacy
    django-redis-cache.
    """
    # django-redis
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        try:
            return client.get_client(write=True)
        except TypeError:
            pass
    # Django's built-in RedisCache (django.core.cache.backends.redis)
    inner = getattr(cache, "_cache", None)
    if inner is not None and hasattr(inner, "get_client") and hasattr(inner, "_pools"):
        return inner.get_client(write=True)
    # django-redis-cache
    if hasattr(cache, "get_master_client"):
        return cache.get_master_client()
    return None


def redis_client_from_setting(value: Any) -> Any:
    """``TRIGGERS['REDIS_CLIENT']``: a URL or the dotted path of a factory."""
    if callable(value):
        return value()
    if isinstance(value, str) and "://" in value:
        import redis

        return redis.Redis.from_url(value)
    from django.utils.module_loading import import_string

    return import_string(value)()
