"""The indexed Redis backend: what ``'cache'``
(:class:`~triggers.storages.cache.CacheStorageBackend`) is on a Redis cache
alias (Django's ``RedisCache``, django-redis, django-redis-cache) or with
``TRIGGERS['REDIS_CLIENT']``. The session is a handful of Redis keys, read
and written through the cache's Redis client. Every key of a session starts
with ``<cache prefix>triggers:{<len>:<uid>}`` (``<len>``: the uid's length,
which keeps keys unambiguous whatever the uid holds), so all of them share
one hash slot in a Redis Cluster: the part in braces is the hash tag. Keep
braces out of the cache's ``KEY_PREFIX``: a prefix holding ``{...}`` makes
that its tag, which still works but puts every session in one slot.

=================  =======  ==================================================
key suffix         type     contents
=================  =======  ==================================================
``:config``        hash     task name -> task directives (JSON)
``:index``         hash     trigger name -> tasks that mention it (JSON list)
``:instances``     hash     instance name -> instance record (JSON, without
                            what it received; ``progress`` counts what it
                            still needs)
``:received``      hash     ``instance<US>trigger`` -> the kwargs the instance
                            received from that ``after`` trigger
                            (``instance<US><US>trigger`` for ``unless``), or
                            ``@<digest>`` for a large value kept in ``:values``
``:values``        hash     digest -> received kwargs (JSON) too large to
                            repeat in every instance that received them
``:waiting``       zset     ``task<US>trigger<US>instance`` for every unstarted
                            instance still missing that trigger (lex ordered)
``:counters``      hash     task name -> next instance number; ``<US>w`` -> 1
                            while the waiting index should exist (so an
                            evicted one is told from an empty one)
``:kwargs``        hash     trigger name -> latest kwargs it fired with (JSON)
``:meta``          string   session metadata (JSON)
``:timers``        hash     timer id -> pending timer (JSON)
``:idem``          zset     idempotency key -> when it expires (Unix time)
``:lease:<inst>``  string   token of the worker running an instance (expires)
``:commits``       string   lock tokens of the last commits (1 KB at most), so
                            a commit retried after a lost reply is not
                            applied twice
=================  =======  ==================================================

The session lock is python-redis-lock's ``lock:<base>:lock`` (and
``lock-signal:<base>:lock``), in the same slot. A fire reads the index
entry for its trigger, the configs of those tasks and the records of the
instances listed as waiting on it (one Lua script; what they received is
read only for an instance asked for by name, and the seed kwargs only when
the fire creates an instance), then writes its changes and releases the
lock in a second script that checks the lock is still ours and, on one
Redis server, also updates the session index shard (on a cluster, whose
scripts keep to one slot, ``touch_index.lua`` goes in the same round trip
instead; see :mod:`~triggers.storages.session_index`). What a fire costs depends on
its trigger, not on the size of the session or the width of a task.

Every key of a session with a ``timeout`` expires ``timeout`` seconds after
its last commit: each commit that writes renews all of them.

Upgrading from a release that used ``triggers:<len>:<uid>`` keys (no
braces): sessions stored under the old names are not read; drain them
(let them finish, or delete them) before upgrading (see the changelog).
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import conf
from ..exceptions import LockHeldError, LockLostError, SessionTimeoutError
from ..locking import SessionLock
from .base import IndexedStorage
from .cache import CacheStorageBackend
from .cluster_wire import refuses_cross_slot, spans_slots
from .data import Changes, FetchRequest, Snapshot
from .redis_codec import (
    PARTS,
    SEP,
    SUFFIXES,
    WAITING_FLAG,
    decode_all,
    decode_fetch,
    encode_request,
    operations,
    text,
)
from .redis_wire import Script, run
from .session_index import RedisSessionIndex, clock, shard_keys, shard_of

__all__ = ["SEP", "SUFFIXES", "RedisStorageBackend", "session_base"]

_FETCH = Script("fetch")
_COMMIT = Script("commit")
_RENEW = Script("renew_lease")
_TOUCH = Script("touch_index")
_SCRIPTS = {s.sha: s for s in (_FETCH, _COMMIT, _RENEW, _TOUCH)}


def session_base(make_key: Callable[[str], Any], uid: str) -> str:
    """The prefix of every key of session ``uid`` (``make_key``: the cache's)."""
    return str(make_key(f"triggers:{{{len(uid)}:{uid}}}"))


class _Names(NamedTuple):
    """The names a session's operations send (see :func:`_session_names`)."""

    base: str
    #: The state keys (``SUFFIXES``' order).
    state: tuple[str, ...]
    lease_prefix: str
    #: python-redis-lock's keys of the session lock (see ``make_lock``).
    lock: str
    signal: str
    #: The fetch script's KEYS but the lease keys: the state keys but the
    #: recent commits, then the lock.
    fetch: tuple[str, ...]
    #: The commit script's KEYS but the lease keys: the state keys, the lock,
    #: its signal; then (``commit_listed``) the session index shard's keys.
    commit: tuple[str, ...]
    commit_listed: tuple[str, ...]
    shard: tuple[str, ...]


@functools.lru_cache(maxsize=1024)
def _session_names(cache: Any, uid: str) -> _Names:
    """A session's key names on ``cache``, named once per recent session (a
    web process builds a storage per request, and the scripts name a dozen
    keys)."""
    base = session_base(cache.make_key, uid)
    state = tuple(f"{base}:{s}" for s in SUFFIXES)
    lock, signal = f"lock:{base}:lock", f"lock-signal:{base}:lock"
    # (What RedisSessionIndex.keys_of(uid) names, without building the index.)
    shard = tuple(shard_keys(cache, shard_of(uid)))
    commit = (*state, lock, signal)
    return _Names(
        base,
        state,
        f"{base}:lease:",
        lock,
        signal,
        (*state[:11], lock),
        commit,
        (*commit, *shard),
        shard,
    )


def _bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Report a Redis call that timed out as :class:`SessionTimeoutError`
    naming the session (see ``_timed_out``; ``existing_parts``, ``fetch``
    and ``commit``, once per operation each, do it themselves rather than
    through this wrapper)."""

    @functools.wraps(method)
    def call(self: RedisStorageBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RedisTimeoutError as exc:
            raise self._timed_out(exc) from exc

    return call


class RedisStorageBackend(CacheStorageBackend, IndexedStorage):
    """The indexed tier on the Redis client of a Django cache alias (see
    the module documentation for its keys)."""

    kind = "indexed"
    _redis: Any  # never None here: that is what picked this class
    parts = PARTS
    parts_in_fetch = True
    # The names the transaction module reads until it uses the public ones.
    _parts = parts
    _parts_in_fetch = parts_in_fetch

    def _prepare(self) -> None:
        self._names = names = _session_names(self.cache, self.uid)
        self._base, self._lease_prefix = names.base, names.lease_prefix
        self._keys = list(names.state)

    def existing_parts(self) -> set[str] | None:
        seen = getattr(self._local, "parts", None)
        txn = self.current_transaction
        if txn is not None and seen is not None and seen[0]() is txn:
            # This operation's fetch script already looked (under its lock):
            # the usual answer, given without the _bounded wrapper's call.
            return set(seen[1])
        names = PARTS
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.exists(f"{self._base}:{name}")
            pipe.hget(f"{self._base}:counters", WAITING_FLAG)
            *found, flag = pipe.execute()
        except RedisTimeoutError as exc:
            raise self._timed_out(exc) from exc
        parts = {name for name, there in zip(names, found, strict=True) if there}
        if text(flag) != "1" and "counters" in parts:
            # Redis deletes an empty waiting index: absent is only lost when
            # the last commit left it non-empty.
            parts.add("waiting")
        return parts

    def make_lock(self) -> Any:
        # The operation timeout is read here, once per operation, not per
        # command. (Positional arguments: a call with keywords costs more.)
        return SessionLock(
            self._redis,
            f"{self._base}:lock",  # (its keys: _session_names' lock and signal)
            int(conf.get("LOCK_EXPIRE")),
            self.uid,
            True,  # deferred
            float(conf.get("OPERATION_TIMEOUT")),  # operation_timeout
        )

    def _operation_lock(self) -> SessionLock | None:
        txn = self.current_transaction
        return txn.lock if txn is not None and isinstance(txn.lock, SessionLock) else None

    def _timed_out(self, exc: RedisTimeoutError) -> SessionTimeoutError:
        """A Redis call that timed out, as the error that names the session
        (the commit script is atomic: whatever timed out was written whole or
        not at all)."""
        lock = self._operation_lock()
        started = getattr(lock, "started", None)
        waited = time.monotonic() - started if started else float(conf.get("REDIS_TIMEOUT"))
        return SessionTimeoutError(self.uid, waited, f"Redis did not answer ({exc})")

    def _run(self, commands: list[tuple[Any, ...]], lock: Any) -> list[Any]:
        """Send ``commands`` in one round trip; a resend after a lost reply
        is safe for both scripts (a fetch finds the lock already ours, a
        commit finds its token among the recent commits)."""
        if not isinstance(lock, SessionLock):
            return run(self._redis, commands, _SCRIPTS)
        started = lock.started
        if started is not None:
            waited = time.monotonic() - started
            limit = lock.operation_timeout
            if waited > (float(conf.get("OPERATION_TIMEOUT")) if limit is None else limit):
                raise SessionTimeoutError(
                    self.uid, waited, "TRIGGERS['OPERATION_TIMEOUT'] passed; nothing written"
                )
        return run(self._redis, commands, _SCRIPTS, lock)

    @contextmanager
    def acquire_lock(self) -> Iterator[Any]:
        with super().acquire_lock() as storage:
            # A block may guard work that never reads the session.
            if isinstance(self.lock, SessionLock):
                self.lock.ensure()
            yield storage

    # -- reads and writes -----------------------------------------------------
    def fetch(self, request: FetchRequest) -> Snapshot:
        try:
            txn = self.current_transaction  # (read once: a property)
            held = txn.lock if txn is not None and isinstance(txn.lock, SessionLock) else None
            # The operation's lock if it is deferred and not taken yet.
            lock = held if held is not None and held.pending else None
            if request.everything:
                if lock is not None:
                    lock.ensure()
                return self._fetch_all(request)
            wanted, instances = encode_request(request)
            # The state keys but the recent commits, then the lock: all it reads.
            keys: tuple[str, ...] | list[str] = self._names.fetch
            if instances:
                keys = [*keys, *[self._lease_prefix + name for name in instances]]
            if lock is None:
                args = ["", 0, wanted]
            else:
                args = [lock.id, lock.expire_ms, wanted]
            idem = request.idempotency_key
            if idem:
                # (The time only matters to an idempotency key's expiry.)
                args += [idem, repr(time.time())]
            if request.timers:
                args += ["", "", "1"] if not idem else ["1"]
            call = _FETCH.call(keys, args)
            if lock is None:
                reply = self._run([call], held)[0]
            else:
                # The first attempt to take the lock (the one that succeeds but
                # under contention) without building take_with's callables.
                reply = self._run([call], lock)[0]
                if reply is None:
                    signal = lock.signal_key
                    reply = lock.take_with(
                        lambda: self._run([call], lock)[0],
                        lambda seconds: self._run([("BLPOP", signal, seconds), call], lock)[1],
                        tried=True,
                    )
                else:
                    lock.took()
            snap, found = decode_fetch(reply)
            if txn is not None:
                # existing_parts() answers from this, under the same lock.
                self._local.parts = (weakref.ref(txn), found)
            return snap
        except RedisTimeoutError as exc:
            raise self._timed_out(exc) from exc

    def _fetch_all(self, request: FetchRequest) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        config_key, _, inst_key, waiting_key, counter_key, kw_key, meta_key = self._keys[:7]
        received_key, timers_key, idem_key, values_key = self._keys[7:11]
        for key in (config_key, inst_key, counter_key, kw_key, received_key, timers_key):
            pipe.hgetall(key)
        pipe.hgetall(values_key)
        pipe.get(meta_key)
        pipe.zrange(waiting_key, 0, -1)
        pipe.zscore(idem_key, request.idempotency_key or "")
        replies = pipe.execute()
        return decode_all(replies, request.idempotency_key)

    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        try:
            if isinstance(lock, SessionLock) and lock.pending:
                if not changes:
                    # Nothing read, nothing to write: the lock was never needed.
                    if release:
                        lock.forget()
                    return
                lock.ensure()
            leases: list[str] = []
            ops = operations(changes, self._lease_prefix, leases)
            # (Any operation means changes; Changes.__bool__ only decides
            # when there is none.)
            if not (ops or changes):
                ttl = 0
            elif self.timeout is None:
                ttl = -1
            else:
                ttl = int(self.timeout * 1000)
            now = clock()
            args = [lock.id, lock.signal_expire, ttl, "1" if release else "0", repr(now)]
            # (The lock is this storage's: make_lock names it.)
            keys = [*self._names.commit, *leases] if leases else self._names.commit
            try:
                try:
                    result = self._run(self._commit_commands(keys, args, ops, ttl, now), lock)[-1]
                except ResponseError as exc:
                    if not (ttl and refuses_cross_slot(self._redis, exc)):
                        raise
                    # Nothing ran: send the index update on its own after all.
                    result = self._run(self._commit_commands(keys, args, ops, ttl, now), lock)[-1]
            finally:
                if release:
                    lock.forget()
            if result == 1:
                raise LockLostError(self.uid)
        except RedisTimeoutError as exc:
            raise self._timed_out(exc) from exc

    def _commit_commands(
        self, keys: Sequence[str], args: list[Any], ops: list[Any], ttl: int, now: float
    ) -> list[tuple[Any, ...]]:
        """The commit script's command, with the session index update (in
        another hash slot) in it or, on a client whose scripts keep to one
        slot (a cluster), queued before it in the same round trip."""
        if not ttl:
            return [_COMMIT.call(keys, [*args, "", "", *ops])]
        expires = "" if self.timeout is None else now + self.timeout
        shard = self._names.shard
        if spans_slots(self._redis):
            listed = self._names.commit_listed if keys is self._names.commit else [*keys, *shard]
            return [_COMMIT.call(listed, [*args, self.uid, expires, *ops])]
        return [
            _TOUCH.call(shard, [self.uid, now, expires]),
            _COMMIT.call(keys, [*args, "", "", *ops]),
        ]

    @_bounded
    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        call = _RENEW.call([self._lease_prefix + name], [token, ms])
        return bool(run(self._redis, [call], _SCRIPTS)[0])

    # == deletion (retention; see session_index.py) ========================
    def delete(self, *, idle_before: datetime | None = None) -> bool:
        if self.current_transaction is not None:
            raise LockHeldError(
                f"delete() of session {self.uid!r} inside a block that holds its lock; "
                "call it after the block"
            )
        lock = self.make_lock()
        lock.acquire_within(float(conf.get("LOCK_TIMEOUT")))
        index = RedisSessionIndex(self.cache, self._redis)
        state, commits = self._keys[:-1], self._keys[-1]
        return index.delete(state, lock, commits, self.uid, self._lease_prefix, idle_before)
