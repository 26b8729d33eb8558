"""The session index of the cache backend: which sessions a cache holds,
by last activity (see :mod:`triggers.sessions` for the public API).

On a Redis cache the index is three sorted sets under the cache's key prefix,
kept by ``commit.lua`` in the same script as every write, so keeping it
current costs a fire no round trip:

======================================  =========================================
key                                     members and scores
======================================  =========================================
``triggers:{sessions}:activity``        uid, time of its last write (Unix seconds)
``triggers:{sessions}:names``           uid, score 0 (lexical order: prefix search)
``triggers:{sessions}:expires``         uid, when its keys expire (sessions with a
                                        ``timeout`` only)
======================================  =========================================

A read of the index first drops the sessions whose keys have expired (a small
script on the three index keys only). A session Redis evicted stays listed
until ``triggers_cleanup`` (or :meth:`delete`) removes it: it holds nothing,
so it counts as resolved.

Redis Cluster: the three keys share one hash slot (``{sessions}``), never a
session's. A cluster port must move the index update out of the commit script
(a session's slot) into a command sent after it on the same connection, or
shard the index by the session's hash tag; the update is idempotent (``ZADD``
of a time, ``ZREM``), so sending it after the script, or twice, is safe.

Any other cache keeps one JSON document listing the uids (written when a
process first writes a session, then at most once a minute per session)
and each session's document records its last activity; listing reads every
listed session's document. That path is for development and single-process
use, like the rest of the non-Redis path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["DocumentSessionIndex", "RedisSessionIndex", "clock", "for_cache"]

SUFFIXES = ("activity", "names", "expires")
#: Uids dropped per prune script call (a long prune never blocks Redis).
PRUNE_BATCH = 500
#: Uids per ZMSCORE when a prefix search reads their activity.
SCORE_BATCH = 1000
#: Seconds between a process's re-checks that the document index lists a uid.
DOCUMENT_RECHECK = 60.0


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


_PRUNE = """
-- KEYS: activity, names, expires; ARGV: now, batch. Drops expired sessions.
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, uid in ipairs(gone) do
  redis.call('ZREM', KEYS[1], uid)
  redis.call('ZREM', KEYS[2], uid)
  redis.call('ZREM', KEYS[3], uid)
end
return #gone
"""

# Takes the session lock (as fetch.lua does), deletes the session and its
# index entries and releases the lock (as commit.lua does) in one step.
# Lease keys are named from the instances hash: they share the session's hash
# slot in a cluster, the index keys do not (see the module docstring).
_DELETE = """
-- KEYS: 1-7 state, 8 lock, 9 lock signal, 10 recent commits,
--       11-13 index (activity, names, expires)
-- ARGV: token, lock expire ms, signal expire ms, uid, lease key prefix,
--       idle_before (Unix seconds, '' for none)
-- Returns nil when the lock is busy, else 1 deleted, 0 nothing stored,
-- 2 kept because the session was written at or after idle_before.
if not redis.call('SET', KEYS[8], ARGV[1], 'NX', 'PX', ARGV[2])
    and redis.call('GET', KEYS[8]) ~= ARGV[1] then
  return false
end
local result = 1
if ARGV[6] ~= '' then
  local seen = redis.call('ZSCORE', KEYS[11], ARGV[4])
  if seen and tonumber(seen) >= tonumber(ARGV[6]) then result = 2 end
end
if result == 1 then
  for _, name in ipairs(redis.call('HKEYS', KEYS[3])) do
    redis.call('DEL', ARGV[5] .. name)
  end
  local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
  redis.call('DEL', KEYS[10])
  for k = 11, 13 do redis.call('ZREM', KEYS[k], ARGV[4]) end
  if n == 0 then result = 0 end
end
redis.call('DEL', KEYS[9])
redis.call('LPUSH', KEYS[9], 1)
redis.call('PEXPIRE', KEYS[9], ARGV[3])
redis.call('DEL', KEYS[8])
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


def index_keys(cache: Any) -> list[str]:
    return [str(cache.make_key(f"triggers:{{sessions}}:{s}")) for s in SUFFIXES]


class RedisSessionIndex:
    """The index on a Redis cache (``client`` is the cache's redis-py client)."""

    def __init__(self, cache: Any, client: Any) -> None:
        self.client = client
        self.keys = index_keys(cache)

    def prune(self) -> None:
        script = _script(self.client, _PRUNE)
        while int(script(keys=self.keys, args=[clock(), PRUNE_BATCH], client=self.client)) >= (
            PRUNE_BATCH
        ):
            pass

    def listing(
        self, prefix: str, offset: int, limit: int | None, older_than: datetime | None
    ) -> list[tuple[str, datetime]]:
        self.prune()
        activity, names, _ = self.keys
        top = f"({older_than.timestamp()!r}" if older_than is not None else "+inf"
        if not prefix:
            rows = self.client.zrevrangebyscore(
                activity, top, "-inf", start=offset, num=-1 if limit is None else limit,
                withscores=True,
            )  # fmt: skip
            return [(_text(uid), to_datetime(score)) for uid, score in rows]
        uids = self.client.zrangebylex(names, *_lex_range(prefix))
        found = self._scores(activity, uids)
        cut = older_than.timestamp() if older_than is not None else None
        rows = sorted(
            ((uid, score) for uid, score in found if cut is None or score < cut),
            key=lambda row: (-row[1], row[0]),
        )
        end = None if limit is None else offset + limit
        return [(uid, to_datetime(score)) for uid, score in rows[offset:end]]

    def _scores(self, activity: str, uids: Iterable[Any]) -> list[tuple[str, float]]:
        uids = list(uids)
        if not uids:
            return []
        # ZMSCORE as a raw command (redis-py 3 has no zmscore()), in slices
        # so a short prefix matching many sessions never builds one huge reply.
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(uids), SCORE_BATCH):
            pipe.execute_command("ZMSCORE", activity, *uids[start : start + SCORE_BATCH])
        scores = [score for part in pipe.execute() for score in part]
        return [(_text(u), float(s)) for u, s in zip(uids, scores, strict=True) if s is not None]

    def count(self, prefix: str) -> int:
        self.prune()
        activity, names, _ = self.keys
        if not prefix:
            return int(self.client.zcard(activity))
        return int(self.client.zlexcount(names, *_lex_range(prefix)))

    def delete(
        self,
        state_keys: list[str],
        lock: Any,
        commits_key: str,
        uid: str,
        lease_prefix: str,
        idle_before: datetime | None,
    ) -> bool:
        """Delete a session under its lock (``lock`` a deferred, pending
        :class:`~triggers.locking.SessionLock`); see the script above."""
        script = _script(self.client, _DELETE)
        keys = [*state_keys, lock.key, lock.signal_key, commits_key, *self.keys]
        since = "" if idle_before is None else repr(idle_before.timestamp())
        args = [lock.id, lock.expire_ms, lock.signal_expire, uid, lease_prefix, since]
        try:
            result = lock.take_with(lambda: script(keys=keys, args=args, client=self.client))
        finally:
            lock.forget()
        return int(result) == 1


_DOCUMENT_LOCK = threading.Lock()
_DOCUMENT_SEEN: dict[tuple[tuple[str, int], str], float] = {}


class DocumentSessionIndex:
    """The index on a non-Redis cache: one JSON document of uids."""

    def __init__(self, cache: Any, document_key: Callable[[str], str] | None = None) -> None:
        self.cache = cache
        #: uid -> the cache key of that session's document.
        self.document_key = document_key
        # The cache prefixes it, like the session documents.
        self.key = "triggers:sessions"
        # Which store this is, for the per-process memo (a locmem cache's
        # dict is shared by the aliases and threads that use its LOCATION).
        self._store = (str(cache.make_key(self.key)), id(getattr(cache, "_cache", None)))

    def _read(self) -> set[str]:
        raw = self.cache.get(self.key)
        return set(json.loads(raw)) if raw else set()

    def _write(self, uids: set[str]) -> None:
        self.cache.set(self.key, json.dumps(sorted(uids)), timeout=None)

    def note(self, uid: str) -> None:
        """After a write: make sure the index lists ``uid`` (at most once a
        minute per process and session, so a fire does not pay for it)."""
        memo = (self._store, uid)
        now = time.monotonic()
        if now - _DOCUMENT_SEEN.get(memo, -DOCUMENT_RECHECK) < DOCUMENT_RECHECK:
            return
        with _DOCUMENT_LOCK:
            uids = self._read()
            if uid not in uids:
                uids.add(uid)
                self._write(uids)
            _DOCUMENT_SEEN[memo] = now

    def forget(self, uid: str) -> None:
        with _DOCUMENT_LOCK:
            _DOCUMENT_SEEN.pop((self._store, uid), None)
            uids = self._read()
            if uid in uids:
                uids.discard(uid)
                self._write(uids)

    def delete(self, uid: str, document: str, idle_before: datetime | None) -> bool:
        """Delete session ``uid`` (its document is cache key ``document``);
        call it holding the session lock."""
        raw = self.cache.get(document)
        if raw is not None and idle_before is not None:
            if json.loads(raw).get("activity", 0.0) >= idle_before.timestamp():
                return False
        if raw is not None:
            self.cache.delete(document)
        self.forget(uid)
        return raw is not None

    def _entries(self, prefix: str) -> list[tuple[str, float]]:
        assert self.document_key is not None, "listing needs document_key"
        uids = sorted(u for u in self._read() if u.startswith(prefix))
        keys = {self.document_key(uid): uid for uid in uids}
        found = self.cache.get_many(list(keys))
        gone = set(uids) - {keys[k] for k in found}
        if gone:
            with _DOCUMENT_LOCK:
                # Expired or deleted elsewhere: drop them from the index.
                current = self._read()
                for uid in gone:
                    _DOCUMENT_SEEN.pop((self._store, uid), None)
                if current & gone:
                    self._write(current - gone)
        rows = []
        for key, raw in found.items():
            activity = json.loads(raw).get("activity", 0.0) if raw else 0.0
            rows.append((keys[key], float(activity)))
        return rows

    def listing(
        self,
        prefix: str,
        offset: int,
        limit: int | None,
        older_than: datetime | None,
    ) -> list[tuple[str, datetime]]:
        cut = older_than.timestamp() if older_than is not None else None
        rows = sorted(
            (row for row in self._entries(prefix) if cut is None or row[1] < cut),
            key=lambda row: (-row[1], row[0]),
        )
        end = None if limit is None else offset + limit
        return [(uid, to_datetime(score)) for uid, score in rows[offset:end]]

    def count(self, prefix: str) -> int:
        return len(self._entries(prefix))


def for_cache(
    cache: Any, client: Any | None, document_key: Callable[[str], str]
) -> RedisSessionIndex | DocumentSessionIndex:
    """The index of a cache: on its Redis ``client``, else the document one."""
    if client is not None:
        return RedisSessionIndex(cache, client)
    return DocumentSessionIndex(cache, document_key)
