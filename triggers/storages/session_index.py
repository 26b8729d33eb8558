"""The session index of the cache backend: which sessions a cache holds,
by last activity (see :mod:`triggers.sessions` for the public API).

On a Redis cache the index is sharded: each session is listed in one of
:data:`SHARDS` shards, picked by a stable hash of its uid
(:func:`shard_of`), and a shard is three sorted sets sharing one hash tag,
under the cache's key prefix:

==========================================  ====================================
key                                         members and scores
==========================================  ====================================
``triggers:{sessions:<k>}:activity``        uid, time of its last write (Unix
                                            seconds)
``triggers:{sessions:<k>}:names``           uid, score 0 (lexical order: prefix
                                            search)
``triggers:{sessions:<k>}:expires``         uid, when its keys expire (sessions
                                            with a ``timeout`` only)
==========================================  ====================================

The shards spread the index over the masters of a Redis Cluster (a fire
writes one shard, never a slot shared by every session). A session's own
keys live in another hash slot. On one Redis server the commit script
updates the shard too (its keys, :meth:`RedisSessionIndex.keys_of`, are
declared in the script's KEYS; written only while the lock is still the
committer's): one command and one reply per commit. On a Redis Cluster (or
a server that refuses a script spanning slots, ``CROSSSLOT``, which the
storage then remembers for that client) no script touches the index and the
session at once: the storage sends ``lua/touch_index.lua`` on the shard's
keys just before its commit script, in the same round trip. Either way the
update is idempotent (``ZADD`` of a time, ``ZREM``), so it is safe to send
again.
Reads (listing, counting) read every shard in one pipeline and merge.

The previous release kept one unsharded index (``triggers:{sessions}:*``)
of sessions this release does not read (see :mod:`triggers.storages.redis`):
delete those keys once the old sessions are drained.

A read of the index first drops the sessions whose keys have expired (a small
script on one shard's keys, run only on shards that have any). A session
Redis evicted stays listed until ``triggers_cleanup`` (or :meth:`delete`)
removes it: it holds nothing, so it counts as resolved.

Any other cache keeps one JSON document listing the uids
(:mod:`triggers.storages.document_index`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..exceptions import LockLostError
from .document_index import DocumentSessionIndex

__all__ = [
    "DocumentSessionIndex",
    "RedisSessionIndex",
    "clock",
    "for_cache",
    "shard_of",
]

SUFFIXES = ("activity", "names", "expires")
#: Shards of the Redis index. Changing it moves sessions between shards:
#: it is part of the stored layout, not a tuning knob.
SHARDS = 16
#: Uids dropped per prune script call (a long prune never blocks Redis).
PRUNE_BATCH = 500
#: Uids per ZMSCORE when a prefix search reads their activity.
SCORE_BATCH = 1000


#: Where :func:`clock` reads the time (tests point it at a past moment to
#: make sessions look old).
time_source = time.time


def clock() -> float:
    """Unix time of a write, as the index records it."""
    return time_source()


def to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(float(timestamp), tz=UTC)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def shard_of(uid: str) -> int:
    """The index shard that lists session ``uid`` (CRC-32: the same in
    every process and Python version, unlike ``hash()``)."""
    return zlib.crc32(uid.encode("utf-8")) % SHARDS


_PRUNE = """
-- KEYS: activity, names, expires of one shard; ARGV: now, batch.
-- Drops the shard's expired sessions.
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, uid in ipairs(gone) do
  redis.call('ZREM', KEYS[1], uid)
  redis.call('ZREM', KEYS[2], uid)
  redis.call('ZREM', KEYS[3], uid)
end
return #gone
"""

# Deletes a session whose lock the caller holds, then releases the lock the
# way commit.lua does. Every key is declared and all share the session's hash
# slot (the index is cleaned afterwards, by the caller).
_DELETE = """
-- KEYS: the session's keys (state, leases, commits...), then lock, lock signal
-- ARGV: token, signal expire ms, idle_before ('' for none), the session's
--       activity in the index ('' unknown)
-- Returns -1 when the lock is no longer ours (nothing deleted), else 1
-- deleted, 0 nothing stored, 2 kept: written at or after idle_before.
local n = #KEYS
local lock, signal = KEYS[n - 1], KEYS[n]
if redis.call('GET', lock) ~= ARGV[1] then return -1 end
local result = 1
if ARGV[3] ~= '' then
  if (tonumber(ARGV[4]) or -1) >= tonumber(ARGV[3]) then result = 2 end
end
if result == 1 then
  local found = 0
  for k = 1, n - 2 do found = found + redis.call('DEL', KEYS[k]) end
  if found == 0 then result = 0 end
end
redis.call('DEL', signal)
redis.call('LPUSH', signal, 1)
redis.call('PEXPIRE', signal, ARGV[2])
redis.call('DEL', lock)
return result
"""

_SCRIPTS: dict[tuple[int, str], Any] = {}


def _script(client: Any, source: str) -> Any:
    key = (id(client), source)
    script = _SCRIPTS.get(key)
    if script is None:
        script = _SCRIPTS[key] = client.register_script(source)
    return script


def _lex_range(prefix: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of the uids starting with ``prefix`` (UTF-8 never
    contains the byte 0xff)."""
    raw = prefix.encode("utf-8")
    return b"[" + raw, b"(" + raw + b"\xff"


def shard_keys(cache: Any, shard: int) -> list[str]:
    """The activity, names and expires keys of index shard ``shard``."""
    return [str(cache.make_key(f"triggers:{{sessions:{shard}}}:{s}")) for s in SUFFIXES]


class RedisSessionIndex:
    """The index on a Redis cache (``client`` is the redis-py client of the
    state: a plain ``Redis`` or a ``RedisCluster``)."""

    def __init__(self, cache: Any, client: Any) -> None:
        self.client = client
        self.shards = [shard_keys(cache, k) for k in range(SHARDS)]

    def keys_of(self, uid: str) -> list[str]:
        """The activity, names and expires keys that list ``uid`` (what
        the commit script -- or, on a cluster, ``lua/touch_index.lua`` sent
        just *before* it -- updates when the storage commits a write of it,
        so a deletion that takes the session lock after the commit finds the
        new activity)."""
        return self.shards[shard_of(uid)]

    def _each(self, command: Callable[[Any, list[str]], Any]) -> list[Any]:
        """Run ``command(pipe, shard_keys)`` for every shard in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self.shards:
            command(pipe, shard)
        return list(pipe.execute())

    def prune(self) -> None:
        now = clock()
        due = self._each(lambda pipe, k: pipe.zrangebyscore(k[2], "-inf", now, start=0, num=1))
        script = _script(self.client, _PRUNE)
        for shard, found in zip(self.shards, due, strict=True):
            if found:
                while int(script(keys=shard, args=[now, PRUNE_BATCH], client=self.client)) >= (
                    PRUNE_BATCH
                ):
                    pass

    def listing(
        self, prefix: str, offset: int, limit: int | None, older_than: datetime | None
    ) -> list[tuple[str, datetime]]:
        self.prune()
        end = None if limit is None else offset + limit
        if not prefix:
            top = f"({older_than.timestamp()!r}" if older_than is not None else "+inf"
            # Each shard's newest `end`, merged: the page is among them.
            parts = self._each(
                lambda pipe, k: pipe.zrevrangebyscore(
                    k[0], top, "-inf", start=0, num=-1 if end is None else end, withscores=True
                )
            )
            found = [(_text(uid), float(score)) for part in parts for uid, score in part]
        else:
            lex = _lex_range(prefix)
            names = self._each(lambda pipe, k: pipe.zrangebylex(k[1], *lex))
            found = self._scores(names)
            if older_than is not None:
                cut = older_than.timestamp()
                found = [(uid, score) for uid, score in found if score < cut]
        rows = sorted(found, key=lambda row: (-row[1], row[0]))
        return [(uid, to_datetime(score)) for uid, score in rows[offset:end]]

    def _scores(self, names: list[list[Any]]) -> list[tuple[str, float]]:
        # ZMSCORE as a raw command (redis-py 3 has no zmscore()), in slices
        # so a short prefix matching many sessions never builds one huge reply.
        pipe = self.client.pipeline(transaction=False)
        asked: list[Any] = []
        for shard, uids in zip(self.shards, names, strict=True):
            for start in range(0, len(uids), SCORE_BATCH):
                pipe.execute_command("ZMSCORE", shard[0], *uids[start : start + SCORE_BATCH])
            asked += uids
        if not asked:
            return []
        scores = [score for part in pipe.execute() for score in part]
        return [(_text(u), float(s)) for u, s in zip(asked, scores, strict=True) if s is not None]

    def count(self, prefix: str) -> int:
        self.prune()
        if not prefix:
            return sum(self._each(lambda pipe, k: pipe.zcard(k[0])))
        lex = _lex_range(prefix)
        return sum(self._each(lambda pipe, k: pipe.zlexcount(k[1], *lex)))

    def delete(
        self,
        state_keys: list[str],
        lock: Any,
        commits_key: str,
        uid: str,
        lease_prefix: str,
        idle_before: datetime | None,
    ) -> bool:
        """Delete a session under its lock (``lock`` a pending
        :class:`~triggers.locking.SessionLock`; released here), then drop it
        from the index. ``state_keys`` are the session's keys (the instances
        hash, whose field names name the lease keys, ends with
        ``:instances``). With ``idle_before``, the session's activity in the
        index is read once the lock is held (no write can come in between)
        and a session written since is kept."""
        lock.ensure()
        try:
            instances = next(k for k in state_keys if k.endswith(":instances"))
            pipe = self.client.pipeline(transaction=False)
            pipe.hkeys(instances)
            pipe.zscore(self.keys_of(uid)[0], uid)
            names, seen = pipe.execute()
            leases = [lease_prefix + _text(name) for name in names]
            keys = [*state_keys, commits_key, *leases, lock.key, lock.signal_key]
            args = [
                lock.id,
                lock.signal_expire,
                "" if idle_before is None else repr(idle_before.timestamp()),
                "" if seen is None else repr(float(seen)),
            ]
            script = _script(self.client, _DELETE)
        except BaseException:
            lock.release()  # nothing was deleted: let the next operation in now
            raise
        try:
            result = int(script(keys=keys, args=args, client=self.client))
        finally:
            lock.forget()  # the script released it (or it was no longer ours)
        if result == -1:
            raise LockLostError(uid)
        if result != 2:
            pipe = self.client.pipeline(transaction=False)
            for key in self.keys_of(uid):
                pipe.zrem(key, uid)
            pipe.execute()
        return result == 1


def for_cache(
    cache: Any, client: Any | None, document_key: Callable[[str], str]
) -> RedisSessionIndex | DocumentSessionIndex:
    """The index of a cache: on its Redis ``client``, else the document one."""
    if client is not None:
        return RedisSessionIndex(cache, client)
    return DocumentSessionIndex(cache, document_key)
