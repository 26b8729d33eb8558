"""Session locks: python-redis-lock locks with a short expiry, renewed by one
background thread per process while held; a process-local fallback for
caches that are not Redis.

A process that dies holding a lock blocks its session for at most
``LOCK_EXPIRE`` seconds plus one poll interval.
"""

from __future__ import annotations

import base64
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis_lock
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connections import keeps_connections, kept_connection
from .connections import redis_client_for_cache as redis_client_for_cache
from .connections import with_timeouts as with_timeouts
from .exceptions import LockTimeoutError

logger = logging.getLogger(__name__)
R = TypeVar("R")

#: Longest single wait on the lock's release signal before trying again; a
#: waiter notices an expired lock at most this long after it expired.
LOCK_POLL = 1

#: How long a release signal waits for a waiter (python-redis-lock's
#: ``signal_expire``, in milliseconds; its default).
SIGNAL_EXPIRE_MS = 1000


class Renewable(Protocol):
    def renew(self) -> None: ...


class _Renewer:
    """One daemon thread per process that renews every held lock and lease
    well before it expires (python-redis-lock's own renewal starts a thread
    per acquisition, which costs more than the rest of a fire).

    :meth:`add` and :meth:`remove` run twice per operation, so they only
    store and drop the item (one dict operation each, atomic, without the
    mutex); the mutex is taken, and the thread woken, only when the thread
    could otherwise sleep past the new item's renewal. The thread never
    writes the items (it keeps each one's next renewal to itself) and looks
    at them with :attr:`_wake_at` set to infinity, so an item stored while
    it looks either is seen or wakes it: ``_wake_at`` is finite only while
    the thread is sure to look again by then."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], float, float]] = {}
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._thread: threading.Thread | None = None
        #: When the thread looks at the items next at the latest (monotonic
        #: clock); infinity while it looks, or when it is not running.
        self._wake_at = math.inf

    def add(self, item: Renewable, interval: float) -> None:
        due = time.monotonic() + interval
        self._items[id(item)] = (weakref.ref(item), interval, due)
        if due < self._wake_at:
            self._wake(due)

    def _wake(self, due: float) -> None:
        with self._mutex:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="triggers-renewer", daemon=True
                )
                self._thread.start()
            elif due < self._wake_at:
                # Waking the thread costs a context switch; it looks at every
                # item when woken, so later items due after this one need not.
                self._wake_at = due
                self._cond.notify()

    def remove(self, item: Renewable) -> None:
        self._items.pop(id(item), None)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._mutex:
                # (Unexpected:) the next add starts another thread.
                self._thread = None
                self._wake_at = math.inf

    def _loop(self) -> None:
        #: Each item's entry (as added) and when it is due next.
        schedule: dict[int, tuple[Any, float]] = {}
        while True:
            with self._cond:
                self._wake_at = math.inf  # an item added while looking wakes us
                now = time.monotonic()
                items = self._items.copy()  # (a copy made in C, unaffected by adds)
                due = []
                next_due = now + 30
                seen: dict[int, tuple[Any, float]] = {}
                for key, entry in items.items():
                    known = schedule.get(key)
                    when = entry[2] if known is None or known[0] is not entry else known[1]
                    if when <= now:
                        due.append(entry[0])
                        when = now + entry[1]
                    seen[key] = (entry, when)
                    next_due = min(next_due, when)
                schedule = seen
                if not due:
                    self._wake_at = next_due
                    self._cond.wait(timeout=next_due - now)
                    continue
            for ref in due:
                item = ref()
                if item is None:
                    continue
                try:
                    item.renew()
                except Exception:  # a failed renewal shows up as a lost lock later
                    logger.warning("could not renew %r", item, exc_info=True)

    def _after_fork(self) -> None:
        # Threads do not survive fork(); locks held by the parent are the
        # parent's business.
        self._items = {}
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._thread = None
        self._wake_at = math.inf


renewer = _Renewer()
os.register_at_fork(after_in_child=renewer._after_fork)


class SessionLock:
    """A session lock: a python-redis-lock ``Lock`` used through its public
    API, plus what an operation needs around it.

    The lock lives under python-redis-lock's documented keys
    (``lock:<name>``, and ``lock-signal:<name>`` to wake waiters), so the
    storage's scripts can take it in the same round trip as their first
    read (:meth:`take_with`) and release it with their write; anything else
    goes through the ``Lock`` object (``acquire``, ``extend``, ``release``).

    With ``deferred=True``, :meth:`acquire_within` only starts the clock and
    the next read takes the lock; work that needs it without reading first
    calls :meth:`ensure`.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        expire: int,
        uid: str,
        deferred: bool = False,
        operation_timeout: float | None = None,
    ) -> None:
        self.uid = uid
        self.deferred = deferred
        self.id = f"{_token_prefix}{next(_token_count)}"  # (see _reset_tokens)
        self.expire = max(1, int(expire))
        self.expire_ms = self.expire * 1000
        #: python-redis-lock's key names for a lock called ``name``.
        self.key = f"lock:{name}"
        self.signal_key = f"lock-signal:{name}"
        self._client = client
        self._name = name
        #: ``TRIGGERS['OPERATION_TIMEOUT']`` as read when the operation
        #: started (``None``: read it when needed).
        self.operation_timeout = operation_timeout

    # What every lock starts with, kept on the class rather than set per
    # instance (a lock is made per operation).
    #: How long a release signal waits for a waiter (milliseconds).
    signal_expire = SIGNAL_EXPIRE_MS
    _redis_lock: redis_lock.Lock | None = None
    _held = False
    #: Deferred and not taken yet: the next read must take it (a plain
    #: attribute: read once or twice per operation).
    pending = False
    #: The pool connection this operation's commands go through (see
    #: :meth:`connection`), and the pool it goes back to.
    _conn: Any = None
    _pool: Any = None
    _deadline = 0.0
    _timeout = 0.0
    #: When the operation holding this lock started (see OPERATION_TIMEOUT).
    started: float | None = None

    @property
    def _lock(self) -> redis_lock.Lock:
        """The python-redis-lock ``Lock``, built when first needed: a fire
        takes and releases the lock in its scripts and never needs it."""
        if self._redis_lock is None:
            self._redis_lock = redis_lock.Lock(
                self._client,
                self._name,
                expire=self.expire,
                id=self.id,
                strict=False,
                signal_expire=SIGNAL_EXPIRE_MS,
            )
        return self._redis_lock

    def acquire_within(self, timeout: float) -> None:
        """Block until acquired or raise :class:`LockTimeoutError` (a deferred
        lock is taken later, within the same time limit)."""
        self._timeout = timeout
        self.started = time.monotonic()
        self._deadline = self.started + timeout
        if self.deferred:
            self.pending = True
            return
        self._acquire_until_deadline()

    def _acquire_until_deadline(self) -> None:
        while True:
            if self._lock.acquire(blocking=True, timeout=LOCK_POLL):
                self.took()
                return
            if time.monotonic() >= self._deadline:
                raise LockTimeoutError(self.uid, self._timeout)

    def took(self) -> None:
        """A call like :meth:`take_with`'s ``attempt``, made by the caller
        (without the two callables, when it is the only one), took the lock."""
        self.pending = False
        self._held = True
        renewer.add(self, self.expire / 3)

    def take_with(
        self,
        attempt: Callable[[], R | None],
        wait_then_attempt: Callable[[int], R | None] | None = None,
        *,
        tried: bool = False,
    ) -> R:
        """Take a pending lock with ``attempt``, a call that sets the lock key
        (``SET NX PX`` with :attr:`id` and :attr:`expire_ms`) in the same
        script as a read and returns ``None`` when the lock is busy. Waits for
        the holder's release signal between attempts.

        ``wait_then_attempt(seconds)``, if given, sends the wait (``BLPOP`` of
        :attr:`signal_key` for at most ``seconds``) and the attempt in one
        round trip on this operation's connection: Redis runs the attempt as
        soon as the release signal wakes the wait, so the lock changes hands
        without a wake-up of this process in between. Used once the first
        attempt has checked out that connection. ``tried``: the caller's own
        first attempt found the lock busy (the first call is a wait)."""
        result = None if tried else attempt()
        while result is None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(self.uid, self._timeout)
            # Woken by the holder's release (its commit pushes the signal).
            wait = max(1, min(LOCK_POLL, int(left + 0.999)))
            if wait_then_attempt is not None and self._can_block_on_connection(wait):
                try:
                    result = wait_then_attempt(wait)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    # The connection dropped during the wait (its retries
                    # spent). Whether or not the attempt ran, the next one
                    # tells: it finds the lock already ours after a lost reply.
                    self._drop_connection()
                    result = attempt()
                except BaseException:
                    # Interrupted with replies still to come.
                    self._drop_connection()
                    raise
                continue
            if not self._wait_on_connection(wait):
                try:
                    self._client.blpop([self.signal_key], wait)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    # Only a wait was lost (a client that does not retry it,
                    # redis-py before 6): the next attempt reconnects, and
                    # raises if Redis is really gone.
                    pass
            result = attempt()
        self.took()
        return result

    def _drop_connection(self) -> None:
        """Close this operation's connection (it reconnects on next use), so
        no reply still due on it is read as another command's."""
        if self._conn is not None:
            self._conn.disconnect()

    def _can_block_on_connection(self, seconds: int) -> bool:
        """This operation holds a connection whose socket timeout (if any)
        outlasts a wait of ``seconds``."""
        conn = self._conn
        if conn is None:
            return False
        socket_timeout = getattr(conn, "socket_timeout", None)
        return socket_timeout is None or socket_timeout >= seconds + 1

    def _wait_on_connection(self, seconds: int) -> bool:
        """BLPOP the release signal on the connection this operation already
        holds (see :meth:`connection`): a client call would check out a
        second connection and cost several times the CPU, on the path every
        waiter takes once per fire under contention. ``False`` when there is
        no such connection or its socket timeout is shorter than the wait."""
        conn = self._conn
        if conn is None or not self._can_block_on_connection(seconds):
            return False
        try:
            conn.send_command("BLPOP", self.signal_key, seconds)
            conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._drop_connection()  # the lock is not ours: nothing is lost
        except BaseException:
            self._drop_connection()  # interrupted with the reply still due
            raise
        return True

    def ensure(self) -> None:
        """Take a pending lock now (for work that does not start with a read)."""
        if self.pending:
            self._acquire_until_deadline()

    def renew(self) -> None:
        if self._held:
            self._lock.extend()

    def connection(self, pool: Any) -> Any:
        """One connection of ``pool`` (a redis-py ``ConnectionPool``) for
        every command of this operation: the one this thread keeps
        (:func:`~triggers.connections.kept_connection`) on a plain pool,
        else one checked out at the first command and returned when the lock
        is released or forgotten."""
        if self._conn is None:
            if keeps_connections(pool):
                self._conn = kept_connection(pool)
            else:
                self._conn = pool.get_connection()
                self._pool = pool
        return self._conn

    def _return_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pool is not None:
            self._pool.release(conn)
            self._pool = None

    def forget(self) -> None:
        """Stop renewing after the lock was released by a commit script."""
        renewer.remove(self)
        self._held = False
        self.pending = False
        if self._pool is None:
            self._conn = None  # the thread's kept connection (or none): it stays
        else:
            self._return_connection()

    def release(self) -> None:
        if not self._held:
            # A deferred lock that was never taken: nothing to release.
            self.pending = False
            self._return_connection()
            return
        self.forget()
        self._lock.release()


def _reset_tokens() -> None:
    """A lock's token (``SessionLock.id``) is unique across processes: a
    random per-process prefix and a counter (python-redis-lock reads the OS
    random source per lock); a forked child starts its own."""
    global _token_prefix, _token_count
    _token_prefix = base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
    _token_count = itertools.count()


_token_prefix = ""
_token_count = itertools.count()
_reset_tokens()
os.register_at_fork(after_in_child=_reset_tokens)


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
