"""The redis-py client behind a Django cache, and the connection a thread
keeps for its session operations.

A session operation sends two commands (its fetch and its commit); checking
a connection out of the pool for each operation costs more client CPU than
packing both (the pool's lock and bookkeeping, a PID check, and a
non-blocking read to make sure nothing was left unread: four system calls).
So each thread keeps the connection it checked out for its next operations
(:func:`kept_connection`), on a plain ``redis.ConnectionPool`` only, and
gives it back when the thread ends, when it has kept connections of too many
other pools, or in a forked child (where it is dropped: it belongs to the
parent). Every exchange on it reads all its replies or closes the socket, so
it never holds a stale reply.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import redis

#: Pools a thread keeps a connection of at once; the one kept longest is
#: given back when another pool comes along (tests and odd projects build
#: many pools; a web process has one or two).
KEPT_PER_THREAD = 4


class _Kept:
    """One connection a thread keeps, given back to its pool when dropped."""

    __slots__ = ("conn", "pid", "pool")

    def __init__(self, pool: Any, conn: Any) -> None:
        self.pool = pool
        self.conn = conn
        self.pid = os.getpid()

    def give_back(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and self.pid == os.getpid():
            self.pool.release(conn)

    def __del__(self) -> None:
        # The thread ended (its locals are dropped) or the entry was evicted.
        self.give_back()


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.kept: OrderedDict[int, _Kept] = OrderedDict()


_threads = _PerThread()


def _after_fork() -> None:
    # The parent's connections are the parent's: drop them without a word
    # to the pool (its own PID check resets it in this process).
    global _threads
    for kept in _threads.kept.values():
        kept.conn = None
    _threads = _PerThread()


os.register_at_fork(after_in_child=_after_fork)


def keeps_connections(pool: Any) -> bool:
    """Whether :func:`kept_connection` keeps connections of ``pool``: a plain
    ``redis.ConnectionPool`` (a blocking pool's size is a limit a kept
    connection would hold on to)."""
    return type(pool) is redis.ConnectionPool


def kept_connection(pool: Any) -> Any:
    """This thread's connection of ``pool`` (a plain ``ConnectionPool``),
    checked out at the first call and kept for the next ones."""
    kept_by_pool = _threads.kept
    kept = kept_by_pool.get(id(pool))
    if kept is not None and kept.pool is pool and kept.conn is not None:
        conn = kept.conn
        should_reconnect = getattr(conn, "should_reconnect", None)  # redis-py 7+
        if should_reconnect is not None and should_reconnect():
            conn.disconnect()  # the server announced maintenance, as release() checks
        return conn
    if kept is not None:
        del kept_by_pool[id(pool)]
        kept.give_back()
    conn = pool.get_connection()
    kept_by_pool[id(pool)] = _Kept(pool, conn)
    while len(kept_by_pool) > KEPT_PER_THREAD:
        _, oldest = kept_by_pool.popitem(last=False)
        oldest.give_back()
    return conn


def give_back_kept_connections() -> None:
    """Return every connection this thread keeps to its pool."""
    kept_by_pool = _threads.kept
    while kept_by_pool:
        _, kept = kept_by_pool.popitem()
        kept.give_back()


def redis_client_for_cache(cache: Any) -> Any | None:
    """The redis-py client behind a Django cache, or ``None`` if it has none.

    Knows Django's built-in RedisCache, django-redis and the legacy
    django-redis-cache.
    """
    # django-redis
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client.get_client(write=True)
    # Django's built-in RedisCache (django.core.cache.backends.redis)
    inner = getattr(cache, "_cache", None)
    if inner is not None and hasattr(inner, "get_client") and hasattr(inner, "_pools"):
        return inner.get_client(write=True)
    # django-redis-cache
    if hasattr(cache, "get_master_client"):
        return cache.get_master_client()
    return None


def with_timeouts(client: Any, timeout: float | None) -> Any:
    """``client``, or a client on a pool of its own whose connections time out
    after ``timeout`` seconds (connect and each reply) when the original sets
    no socket timeout: a hung Redis must not block a session operation for
    as long as the operating system lets a socket wait."""
    if timeout is None or client is None:
        return client
    pool = getattr(client, "connection_pool", None)
    if type(pool) is not redis.ConnectionPool:
        return client  # cluster, sentinel, blocking pools: left as configured
    kwargs = dict(pool.connection_kwargs)
    if kwargs.get("socket_timeout") is not None:
        return client
    kwargs["socket_timeout"] = float(timeout)
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = float(timeout)
    bounded = redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
    )
    return type(client)(connection_pool=bounded)
