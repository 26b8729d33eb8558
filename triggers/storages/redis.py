"""The indexed Redis backend: what ``'cache'``
(:class:`~triggers.storages.cache.CacheStorageBackend`) is on a Redis cache
alias (Django's ``RedisCache``, django-redis, django-redis-cache) or with
``TRIGGERS['REDIS_CLIENT']``. The session is a
handful of Redis keys, read and written through the cache's Redis client:

=================  =======  ==================================================
key suffix         type     contents
=================  =======  ==================================================
``:config``        hash     task name -> task directives (JSON)
``:index``         hash     trigger name -> tasks that mention it (JSON list)
``:instances``     hash     instance name -> instance record (JSON)
``:waiting``       zset     ``task<US>trigger<US>instance`` for every unstarted
                            instance still missing that trigger (lex ordered)
``:counters``      hash     task name -> next instance number; ``<US>w`` -> 1
                            while the waiting index should exist (so an
                            evicted one is told from an empty one)
``:kwargs``        hash     trigger name -> latest kwargs it fired with (JSON)
``:meta``          string   session metadata (JSON)
``:lease:<inst>``  string   token of the worker running an instance (expires)
``:commits``       string   lock tokens of the last commits (1 KB at most), so
                            a commit retried after a lost reply is not
                            applied twice
=================  =======  ==================================================

A fire reads the index entry for its trigger, the configs of those tasks and
only the instances listed as waiting on it (one Lua script), then writes its
changes and releases the lock in a second script that checks the lock is
still ours, so what a fire costs does not grow with the session.
"""

from __future__ import annotations

import functools
import json
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from importlib import resources
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import conf
from ..exceptions import LockHeldError, LockLostError, SessionTimeoutError
from ..locking import SessionLock
from .base import IndexedStorage, config_from_stored
from .cache import CacheStorageBackend
from .data import Changes, FetchRequest, Snapshot, build_index
from .session_index import RedisSessionIndex, clock, index_keys

__all__ = ["RedisStorageBackend"]

SEP = "\x1f"
#: State keys a fire can check for (see ``existing_parts``), in fetch.lua's order.
_PARTS = ("config", "index", "instances", "counters", "kwargs", "waiting")
#: Field of the counters hash that says the waiting index should exist.
_WAITING_FLAG = SEP + "w"
_SCRIPTS: dict[str, Any] = {}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _script(client: Any, name: str) -> Any:
    script = _SCRIPTS.get(name)
    if script is None:
        source = resources.files("triggers.storages").joinpath(f"lua/{name}.lua").read_text()
        script = _SCRIPTS[name] = client.register_script(source)
    return script


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
        suffixes = ("config", "index", "instances", "waiting", "counters", "kwargs", "meta")
        self._keys = [f"{self._base}:{s}" for s in suffixes]
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

    def _run(self, name: str, keys: list[str], args: list[Any], lock: Any) -> Any:
        """Run Lua script ``name`` through the client, whose retries may
        resend it: both scripts are safe to resend (a fetch finds the lock
        already ours, a commit finds its token among the recent commits)."""
        script = _script(self._redis, name)
        started = getattr(lock, "started", None) if isinstance(lock, SessionLock) else None
        if started is not None:
            waited = time.monotonic() - started
            if waited > float(conf.get("OPERATION_TIMEOUT")):
                raise SessionTimeoutError(
                    self.uid, waited, "TRIGGERS['OPERATION_TIMEOUT'] passed; nothing written"
                )
        return script(keys=keys, args=args, client=self._redis)

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
            return self._fetch_all()
        wanted = json.dumps(
            [request.triggers, request.tasks, request.instances], ensure_ascii=False
        )
        if lock is None:
            args: list[Any] = ["", 0, self._lease_prefix, wanted]
            reply = self._run("fetch", self._keys, args, self._operation_lock())
        else:
            keys = [*self._keys, lock.key]
            args = [lock.id, lock.expire_ms, self._lease_prefix, wanted]
            reply = lock.take_with(lambda: self._run("fetch", keys, args, lock))
        # Empty arrays come back as {} (Lua cannot tell them from objects).
        meta_raw: Any
        meta_raw, index_raw, tasks_raw, waiting_raw, inst_raw, kw_raw, lease_raw, exist = (
            part or [] for part in json.loads(reply)
        )
        if self.current_transaction is not None:
            found = {name for name, e in zip(_PARTS, exist, strict=False) if e}
            self._local.parts = (weakref.ref(self.current_transaction), found)
        snap = Snapshot(meta=json.loads(meta_raw) if meta_raw else None)
        for i in range(0, len(index_raw), 2):
            snap.index[index_raw[i]] = json.loads(index_raw[i + 1]) if index_raw[i + 1] else []
        for i in range(0, len(tasks_raw), 3):
            name = tasks_raw[i]
            if tasks_raw[i + 1]:
                snap.configs[name] = config_from_stored(name, json.loads(tasks_raw[i + 1]))
            snap.counters[name] = int(tasks_raw[i + 2])
        for i in range(0, len(waiting_raw), 3):
            snap.waiting[(waiting_raw[i], waiting_raw[i + 1])] = waiting_raw[i + 2] or []
        for i in range(0, len(inst_raw), 2):
            if inst_raw[i + 1]:
                snap.records[inst_raw[i]] = json.loads(inst_raw[i + 1])
        for i in range(0, len(kw_raw), 2):
            trig = kw_raw[i]
            snap.kwargs_known.add(trig)
            if kw_raw[i + 1]:
                snap.latest_kwargs[trig] = json.loads(kw_raw[i + 1])
        for i in range(0, len(lease_raw), 2):
            if lease_raw[i + 1] > 0:
                snap.leases[lease_raw[i]] = int(lease_raw[i + 1])
        return snap

    def _fetch_all(self) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        config_key, _, inst_key, waiting_key, counter_key, kw_key, meta_key = self._keys
        for key in (config_key, inst_key, counter_key, kw_key):
            pipe.hgetall(key)
        pipe.get(meta_key)
        pipe.zrange(waiting_key, 0, -1)
        configs_raw, inst_raw, counters_raw, kw_raw, meta_raw, waiting_raw = pipe.execute()
        configs = {
            _text(k): config_from_stored(_text(k), json.loads(v)) for k, v in configs_raw.items()
        }
        waiting: dict[tuple[str, str], list[str]] = {}
        for member in waiting_raw:
            task, trig, name = _text(member).split(SEP, 2)
            waiting.setdefault((task, trig), []).append(name)
        latest = {_text(k): json.loads(v) for k, v in kw_raw.items()}
        return Snapshot(
            meta=json.loads(meta_raw) if meta_raw else None,
            index=build_index(configs),
            configs=configs,
            counters={
                _text(k): int(v) for k, v in counters_raw.items() if _text(k) != _WAITING_FLAG
            },
            waiting=waiting,
            records={_text(k): json.loads(v) for k, v in inst_raw.items()},
            latest_kwargs=latest,
            kwargs_known=set(latest),
            everything=True,
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
        ops: list[Any] = []
        for name, cfg in changes.configs.items():
            ops += ["H", "1", name, _dumps(cfg.to_directives())]
        if changes.index is not None:
            ops += ["X", "2"]
            for trig, task_names in changes.index.items():
                ops += ["H", "2", trig, _dumps(task_names)]
        for name, inst in changes.instances.items():
            ops += ["H", "3", name, _dumps(inst.to_record())]
        for task, trig, name in sorted(changes.waiting_remove):
            ops += ["R", f"{task}{SEP}{trig}{SEP}{name}"]
        for task, trig, name in sorted(changes.waiting_add):
            ops += ["Z", f"{task}{SEP}{trig}{SEP}{name}"]
        for task, number in changes.counters.items():
            ops += ["H", "5", task, str(number)]
        for trig, kwargs in changes.latest_kwargs.items():
            ops += ["H", "6", trig, _dumps(kwargs)]
        if changes.meta is not None:
            ops += ["S", _dumps(changes.meta)]
        for name, (token, ms) in changes.leases_set.items():
            ops += ["L", name, token, str(int(ms))]
        for name in changes.leases_drop:
            ops += ["U", name]
        if not changes:
            ttl = 0
        elif self.timeout is None:
            ttl = -1
        else:
            ttl = int(self.timeout * 1000)
        # Raw UTF-8 (not \u escapes): Lua's cjson passes it through untouched.
        packed = json.dumps(ops, ensure_ascii=False, separators=(",", ":"))
        release_flag = "1" if release else "0"
        args = [lock.id, lock.signal_expire, ttl, release_flag, self._lease_prefix, packed]
        keys = [*self._keys, lock.key, lock.signal_key, f"{self._base}:commits"]
        self._index_commit(keys, args)  # session index (retention)
        try:
            result = self._run("commit", keys, args, lock)
        finally:
            if release:
                lock.forget()
        if result == 1:
            raise LockLostError(self.uid)

    @_bounded
    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        script = _script(self._redis, "renew_lease")
        return bool(script(keys=[self._lease_prefix + name], args=[token, ms], client=self._redis))

    # == session index and deletion (retention; see session_index.py) =======
    def _index_commit(self, keys: list[Any], args: list[Any]) -> None:
        """commit.lua's optional index keys and arguments: the script records
        the activity of every commit that writes, in the same round trip."""
        now = clock()
        keys += self._index_keys
        args += [self.uid, repr(now), "" if self.timeout is None else repr(now + self.timeout)]

    @cached_property
    def _index_keys(self) -> list[str]:
        return index_keys(self.cache)

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        if self.current_transaction is not None:
            raise LockHeldError(
                f"delete() of session {self.uid!r} inside a block that holds its lock; "
                "call it after the block"
            )
        lock = self.make_lock()
        lock.acquire_within(float(conf.get("LOCK_TIMEOUT")))
        index = RedisSessionIndex(self.cache, self._redis)
        commits = f"{self._base}:commits"
        return index.delete(self._keys, lock, commits, self.uid, self._lease_prefix, idle_before)
