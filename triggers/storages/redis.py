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
lock in a second script that checks the lock is still ours, sent in one
round trip with the session index update. What a fire costs depends on
its trigger, not on the size of the session or the width of a task.

Upgrading from a release that used ``triggers:<len>:<uid>`` keys (no
braces): sessions stored under the old names are not read; drain them
(let them finish, or delete them) before upgrading (see the changelog).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import conf
from ..exceptions import LockHeldError, LockLostError, SessionTimeoutError
from ..locking import SessionLock
from .base import IndexedStorage, config_from_stored
from .cache import CacheStorageBackend
from .data import UNLESS, Changes, FetchRequest, Snapshot, build_index
from .redis_wire import Batch, Script, run
from .session_index import RedisSessionIndex, clock

__all__ = ["RedisStorageBackend", "SUFFIXES", "session_base"]

SEP = "\x1f"
#: State keys a fire can check for (see ``existing_parts``), in fetch.lua's order.
_PARTS = ("config", "index", "instances", "counters", "kwargs", "waiting")
#: The session's keys in the order the scripts take them (KEYS[1..11]).
SUFFIXES = (
    "config",
    "index",
    "instances",
    "waiting",
    "counters",
    "kwargs",
    "meta",
    "received",
    "timers",
    "idem",
    "values",
    "commits",
)
_CONFIG, _INDEX, _INSTANCES, _WAITING, _COUNTERS, _KWARGS, _META, _RECEIVED, _TIMERS = (
    str(k) for k in range(1, 10)
)
_VALUES = "11"
#: Received kwargs longer than this (JSON) are stored once by digest in
#: ``:values`` and referenced as ``@<digest>``: an andEvery task's instances
#: all receive the same kwargs from the triggers that fired before them.
SHARED_VALUE_BYTES = 96
#: Where the lock keys and the lease keys start in a script's KEYS.
_FIRST_LEASE = len(SUFFIXES) + 3
#: Field of the counters hash that says the waiting index should exist.
_WAITING_FLAG = SEP + "w"
_FETCH = Script("fetch")
_COMMIT = Script("commit")
_RENEW = Script("renew_lease")
_SCRIPTS = {s.sha: s for s in (_FETCH, _COMMIT, _RENEW)}


_INDEXES: weakref.WeakKeyDictionary[Any, tuple[Any, RedisSessionIndex]] = (
    weakref.WeakKeyDictionary()
)


def _session_index(cache: Any, client: Any) -> RedisSessionIndex:
    """The session index of ``cache`` on ``client``, built once per cache
    (building it names every shard's keys)."""
    try:
        found = _INDEXES.get(cache)
    except TypeError:  # a cache that cannot be a weak key
        return RedisSessionIndex(cache, client)
    if found is None or found[0] is not client:
        found = _INDEXES[cache] = (client, RedisSessionIndex(cache, client))
    return found[1]


def session_base(make_key: Callable[[str], Any], uid: str) -> str:
    """The prefix of every key of session ``uid`` (``make_key``: the cache's)."""
    return str(make_key(f"triggers:{{{len(uid)}:{uid}}}"))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


#: Compact JSON, raw UTF-8 (Lua's cjson passes it through untouched); one
#: encoder for the process (``json.dumps`` builds one per call).
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Report a Redis call that timed out as :class:`SessionTimeoutError`
    naming the session (the commit script is atomic: whatever timed out was
    written whole or not at all)."""

    @functools.wraps(method)
    def call(self: RedisStorageBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RedisTimeoutError as exc:
            lock = self._operation_lock()
            started = getattr(lock, "started", None)
            waited = time.monotonic() - started if started else float(conf.get("REDIS_TIMEOUT"))
            raise SessionTimeoutError(self.uid, waited, f"Redis did not answer ({exc})") from exc

    return call


@functools.lru_cache(maxsize=512)
def _config(name: str, raw: str) -> Any:
    """A stored config, parsed once per process and stored form (a wide
    task's directives are large; configs are never changed in place)."""
    return config_from_stored(name, json.loads(raw))


def _shared(value: str) -> str:
    """The ``:values`` field of a large received value (a 128-bit digest)."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def _merge_received(record: dict[str, Any], fields: Any) -> None:
    """Put what a named instance received (``[trigger, kwargs JSON, ...]``,
    ``UNLESS + trigger`` for ``unless``) into its record, making it whole."""
    kwargs: dict[str, Any] = {}
    abandon: dict[str, Any] = {}
    fields = fields or []
    for i in range(0, len(fields), 2):
        name = fields[i]
        if name.startswith(UNLESS):
            abandon[name[len(UNLESS) :]] = json.loads(fields[i + 1])
        else:
            kwargs[name] = json.loads(fields[i + 1])
    record["kwargs"] = kwargs
    record["abandon_state"] = abandon


class RedisStorageBackend(CacheStorageBackend, IndexedStorage):
    """The indexed tier on the Redis client of a Django cache alias (see
    the module documentation for its keys)."""

    kind = "indexed"
    _redis: Any  # never None here: that is what picked this class
    parts = _PARTS
    parts_in_fetch = True
    # The names the transaction module reads until it uses the public ones.
    _parts = parts
    _parts_in_fetch = parts_in_fetch

    def _prepare(self) -> None:
        self._base = session_base(self.cache.make_key, self.uid)
        self._keys = [f"{self._base}:{s}" for s in SUFFIXES]
        self._lease_prefix = f"{self._base}:lease:"

    @_bounded
    def existing_parts(self) -> set[str] | None:
        seen = getattr(self._local, "parts", None)
        txn = self.current_transaction
        if txn is not None and seen is not None and seen[0]() is txn:
            # This operation's fetch script already looked (under its lock).
            return set(seen[1])
        names = _PARTS
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(f"{self._base}:{name}")
        pipe.hget(f"{self._base}:counters", _WAITING_FLAG)
        *found, flag = pipe.execute()
        parts = {name for name, there in zip(names, found, strict=True) if there}
        if _text(flag) != "1" and "counters" in parts:
            # Redis deletes an empty waiting index: absent is only lost when
            # the last commit left it non-empty.
            parts.add("waiting")
        return parts

    def make_lock(self) -> Any:
        return SessionLock(
            self._redis, f"{self._base}:lock", int(conf.get("LOCK_EXPIRE")), self.uid, deferred=True
        )

    def _operation_lock(self) -> SessionLock | None:
        txn = self.current_transaction
        return txn.lock if txn is not None and isinstance(txn.lock, SessionLock) else None

    def _lock_keys(self, lock: Any) -> list[str]:
        if isinstance(lock, SessionLock):
            return [lock.key, lock.signal_key]
        name = f"{self._base}:lock"
        return [f"lock:{name}", f"lock-signal:{name}"]

    def _run(self, commands: list[tuple[Any, ...]], lock: Any) -> list[Any]:
        """Send ``commands`` in one round trip; a resend after a lost reply
        is safe for both scripts (a fetch finds the lock already ours, a
        commit finds its token among the recent commits)."""
        started = getattr(lock, "started", None) if isinstance(lock, SessionLock) else None
        if started is not None:
            waited = time.monotonic() - started
            if waited > float(conf.get("OPERATION_TIMEOUT")):
                raise SessionTimeoutError(
                    self.uid, waited, "TRIGGERS['OPERATION_TIMEOUT'] passed; nothing written"
                )
        holder = lock if isinstance(lock, SessionLock) else None
        return run(self._redis, commands, _SCRIPTS, holder)

    def _lock_to_take(self) -> SessionLock | None:
        """The current operation's lock if it is deferred and not taken yet."""
        txn = self.current_transaction
        if txn is not None and isinstance(txn.lock, SessionLock) and txn.lock.pending:
            return txn.lock
        return None

    @contextmanager
    def acquire_lock(self) -> Iterator[Any]:
        with super().acquire_lock() as storage:
            # A block may guard work that never reads the session.
            if isinstance(self.lock, SessionLock):
                self.lock.ensure()
            yield storage

    # -- reads and writes -----------------------------------------------------
    @_bounded
    def fetch(self, request: FetchRequest) -> Snapshot:
        lock = self._lock_to_take()
        if request.everything:
            if lock is not None:
                lock.ensure()
            return self._fetch_all(request)
        wanted = _dumps([request.triggers, request.tasks, request.instances, request.kwargs])
        keys = [*self._keys, *self._lock_keys(lock)]
        keys += [self._lease_prefix + name for name in request.instances]
        extra = [request.idempotency_key or "", repr(time.time()), "1" if request.timers else ""]
        if lock is None:
            call = _FETCH.call(keys, ["", 0, wanted, *extra])
            reply = self._run([call], self._operation_lock())[0]
        else:
            call = _FETCH.call(keys, [lock.id, lock.expire_ms, wanted, *extra])
            reply = lock.take_with(lambda: self._run([call], lock)[0])
        return self._snapshot(json.loads(reply), request)

    def _snapshot(self, parts: list[Any], request: FetchRequest) -> Snapshot:
        # Empty arrays come back as {} (Lua cannot tell them from objects).
        meta_raw: Any
        meta_raw, index_raw, tasks_raw, waiting_raw, inst_raw, kw_raw, lease_raw, exist = (
            part or [] for part in parts[:8]
        )
        received_raw, seen, timers_raw = parts[8] or [], parts[9], parts[10] or []
        if self.current_transaction is not None:
            found = {name for name, e in zip(_PARTS, exist, strict=False) if e}
            self._local.parts = (weakref.ref(self.current_transaction), found)
        snap = Snapshot(meta=json.loads(meta_raw) if meta_raw else None)
        snap.idempotency_seen = bool(seen)
        for i in range(0, len(timers_raw), 2):
            snap.timers[timers_raw[i]] = json.loads(timers_raw[i + 1])
        for i in range(0, len(index_raw), 2):
            snap.index[index_raw[i]] = json.loads(index_raw[i + 1]) if index_raw[i + 1] else []
        for i in range(0, len(tasks_raw), 3):
            name = tasks_raw[i]
            if tasks_raw[i + 1]:
                snap.configs[name] = _config(name, tasks_raw[i + 1])
            snap.counters[name] = int(tasks_raw[i + 2])
        for i in range(0, len(waiting_raw), 3):
            snap.waiting[(waiting_raw[i], waiting_raw[i + 1])] = waiting_raw[i + 2] or []
        for i in range(0, len(inst_raw), 2):
            if inst_raw[i + 1]:
                snap.records[inst_raw[i]] = json.loads(inst_raw[i + 1])
        for i in range(0, len(received_raw), 2):
            record = snap.records.get(received_raw[i])
            if record is not None:
                _merge_received(record, received_raw[i + 1])
        for i in range(0, len(kw_raw), 2):
            trig = kw_raw[i]
            snap.kwargs_known.add(trig)
            if kw_raw[i + 1]:
                snap.latest_kwargs[trig] = json.loads(kw_raw[i + 1])
        for i in range(0, len(lease_raw), 2):
            if lease_raw[i + 1] > 0:
                snap.leases[lease_raw[i]] = int(lease_raw[i + 1])
        return snap

    def _fetch_all(self, request: FetchRequest) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        config_key, _, inst_key, waiting_key, counter_key, kw_key, meta_key = self._keys[:7]
        received_key, timers_key, idem_key, values_key = self._keys[7:11]
        for key in (config_key, inst_key, counter_key, kw_key, received_key, timers_key):
            pipe.hgetall(key)
        pipe.hgetall(values_key)
        pipe.get(meta_key)
        pipe.zrange(waiting_key, 0, -1)
        idem = request.idempotency_key
        pipe.zscore(idem_key, idem or "")
        replies = pipe.execute()
        configs_raw, inst_raw, counters_raw, kw_raw, received_raw, timers_raw = replies[:6]
        values_raw, meta_raw, waiting_raw, expiry = replies[6:]
        values = {_text(k): v for k, v in values_raw.items()}
        configs = {
            _text(k): config_from_stored(_text(k), json.loads(v)) for k, v in configs_raw.items()
        }
        waiting: dict[tuple[str, str], list[str]] = {}
        for member in waiting_raw:
            task, trig, name = _text(member).split(SEP, 2)
            waiting.setdefault((task, trig), []).append(name)
        received: dict[str, list[Any]] = {}
        for field, value in received_raw.items():
            name, _, trig = _text(field).partition(SEP)
            value = _text(value)
            if value.startswith("@"):
                value = values.get(value[1:], "null")
            received.setdefault(name, []).extend((trig, value))
        records = {}
        for k, v in inst_raw.items():
            name = _text(k)
            records[name] = record = json.loads(v)
            if "progress" in record:  # else an older record, which holds them
                _merge_received(record, received.get(name))
        latest = {_text(k): json.loads(v) for k, v in kw_raw.items()}
        return Snapshot(
            meta=json.loads(meta_raw) if meta_raw else None,
            index=build_index(configs),
            configs=configs,
            counters={
                _text(k): int(v) for k, v in counters_raw.items() if _text(k) != _WAITING_FLAG
            },
            waiting=waiting,
            records=records,
            latest_kwargs=latest,
            kwargs_known=set(latest),
            everything=True,
            idempotency_seen=idem is not None and expiry is not None and expiry > time.time(),
            timers={_text(k): json.loads(v) for k, v in timers_raw.items()},
        )

    @_bounded
    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        if isinstance(lock, SessionLock) and lock.pending:
            if not changes:
                # Nothing read, nothing to write: the lock was never needed.
                if release:
                    lock.forget()
                return
            lock.ensure()
        leases: list[str] = []
        ops = self._operations(changes, leases)
        if not changes:
            ttl = 0
        elif self.timeout is None:
            ttl = -1
        else:
            ttl = int(self.timeout * 1000)
        now = clock()
        args = [lock.id, lock.signal_expire, ttl, "1" if release else "0", repr(now), *ops]
        keys = [*self._keys, *self._lock_keys(lock), *leases]
        commands: list[tuple[Any, ...]] = []
        if ttl:
            # The session index (retention), in another hash slot: queued
            # before the script, in the same round trip.
            expires = None if self.timeout is None else now + self.timeout
            batch = Batch()
            _session_index(self.cache, self._redis).queue_touch(batch, self.uid, now, expires)
            commands += batch.commands
        commands.append(_COMMIT.call(keys, args))
        try:
            result = self._run(commands, lock)[-1]
        finally:
            if release:
                lock.forget()
        if result == 1:
            raise LockLostError(self.uid)

    def _operations(self, changes: Changes, leases: list[str]) -> list[Any]:
        """commit.lua's operations for ``changes``; the lease keys they name
        are appended to ``leases`` (the script's KEYS from ``_FIRST_LEASE``)."""
        ops: list[Any] = []
        for name, cfg in changes.configs.items():
            ops += ["H", _CONFIG, name, _dumps(cfg.to_directives())]
        if changes.index is not None:
            ops += ["X", _INDEX]
            for trig, task_names in changes.index.items():
                ops += ["H", _INDEX, trig, _dumps(task_names)]
        for name, inst in changes.instances.items():
            ops += ["H", _INSTANCES, name, _dumps(inst.to_record(kwargs=False))]
        for name, fields in changes.received.items():
            for field, kwargs in fields.items():
                value = _dumps(kwargs)
                if len(value) > SHARED_VALUE_BYTES:
                    digest = _shared(value)
                    ops += ["N", _VALUES, digest, value]
                    value = "@" + digest
                ops += ["H", _RECEIVED, f"{name}{SEP}{field}", value]
        for name, gone in changes.received_drop.items():
            for field in gone:
                ops += ["D", _RECEIVED, f"{name}{SEP}{field}"]
        for task, trig, name in sorted(changes.waiting_remove):
            ops += ["R", f"{task}{SEP}{trig}{SEP}{name}"]
        for task, trig, name in sorted(changes.waiting_add):
            ops += ["Z", f"{task}{SEP}{trig}{SEP}{name}"]
        for task, number in changes.counters.items():
            ops += ["H", _COUNTERS, task, str(number)]
        for trig, kwargs in changes.latest_kwargs.items():
            ops += ["H", _KWARGS, trig, _dumps(kwargs)]
        if changes.meta is not None:
            ops += ["S", _dumps(changes.meta)]
        for timer, pending in changes.timers_add.items():
            ops += ["H", _TIMERS, timer, _dumps(pending)]
        for timer in changes.timers_remove:
            ops += ["D", _TIMERS, timer]
        if changes.idempotency is not None:
            key, expiry = changes.idempotency
            ops += ["I", key, repr(float(expiry))]
        for name, (token, ms) in changes.leases_set.items():
            leases.append(self._lease_prefix + name)
            ops += ["L", str(_FIRST_LEASE + len(leases) - 1), token, str(int(ms))]
        for name in changes.leases_drop:
            leases.append(self._lease_prefix + name)
            ops += ["U", str(_FIRST_LEASE + len(leases) - 1)]
        return ops

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
