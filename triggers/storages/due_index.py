"""The due index: every pending timer of every session, ordered by when it
is due, so :func:`triggers.timers.fire_due_timers` reads only the timers
that are due -- its cost does not grow with the number of sessions.

A session keeps its own timers (``storage.timers``, written in the same
commit as the rest of a fire); this index only points at them: ``(session
uid, timer id) -> due time`` plus a *locator* (the storage's registry key
and constructor options, and the manager key) that rebuilds the session's
manager in a sweeper. It is written outside the session's commit (a Redis
Cluster script may not touch another slot), idempotently, and it may
point at a timer that is gone: the sweeper applies a timer only if the
session still holds it, in the session's own locked commit, so an entry
that is stale, duplicated or read by two sweepers at once never fires
twice. A timer is added to the index before the commit that stores it
when its fire is delayed (see :mod:`triggers.timers`), so a process dying
between the two leaves a harmless stale entry, never a timer nobody sweeps.

Claiming: a sweeper moves the entries it takes to ``now + CLAIM_SECONDS``
in the same step as it reads them, so concurrent sweepers take different
timers; a sweeper killed mid-way leaves its entries to come back after
``CLAIM_SECONDS``.

Where the index lives, by backend:

==========================  ====================================================
Redis (``'cache'`` on a     ``SHARDS`` pairs of keys ``triggers:{due:<k>}``
Redis cache)                (sorted set: ``uid<US>timer id`` scored by due
                            time) and ``triggers:{due:<k>}:at`` (hash: member ->
                            locator JSON), under the cache's key prefix; a
                            session's entries go to shard ``crc32(uid) %
                            SHARDS``, and the two keys of a shard share a
                            hash slot (Redis Cluster)
database                    the ``triggers_due_timer`` table (indexed ``due``),
                            claimed with ``SELECT ... FOR UPDATE SKIP LOCKED``
any other Django cache      one JSON document, changed under a ``cache.add()``
                            mutex (development and single-server use)
any other backend           a process-local index (one process only)
==========================  ====================================================
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import conf

if TYPE_CHECKING:
    from .base import BaseTriggerStorage
    from .data import Changes

__all__ = [
    "CLAIM_SECONDS",
    "DueEntry",
    "DueIndex",
    "after_commit",
    "entry_for",
    "index_for",
    "write_ahead",
]

logger = logging.getLogger("triggers.timers")

#: Seconds a sweeper holds the entries it claimed before others may take them.
CLAIM_SECONDS = 120.0
#: Shards of the Redis index (each its own hash slot on a cluster).
SHARDS = 16
#: Entries claimed per round trip.
BATCH = 500
SEP = "\x1f"


class DueEntry(NamedTuple):
    """One pending timer as the index knows it."""

    uid: str
    timer_id: str
    #: Unix time it is due (or, once claimed, when the claim lapses).
    due: float
    #: ``{"storage": key, "options": {...}, "manager": key or None,
    #: "trigger": name, "instance": name or None, "written": Unix time}``.
    locator: dict[str, Any]


def entry_for(storage: BaseTriggerStorage, timer_id: str, timer: dict[str, Any]) -> DueEntry:
    """The index entry of ``timer`` (a session's timer record) in ``storage``."""
    from ..schedule import from_iso
    from . import storage_backends

    locator = {
        "storage": storage_backends.key_for(type(storage)),
        "options": storage.get_init_kwargs(),
        "manager": timer.get("manager"),
        # What applying it will read, so the sweeper reads it with the timer.
        "trigger": timer["trigger"],
        "instance": timer.get("instance"),
        # When the entry was written (Unix time): a sweeper that finds no
        # such timer in the session soon after may be ahead of its commit.
        "written": time.time(),
    }
    return DueEntry(storage.uid, timer_id, from_iso(timer["due"]).timestamp(), locator)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class DueIndex:
    """What every due index offers (all idempotent)."""

    def add(self, entries: Iterable[DueEntry]) -> None:
        """Point at these timers (a second add of one replaces it)."""
        raise NotImplementedError

    def remove(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget ``(uid, timer id)`` pairs (absent ones are ignored)."""
        raise NotImplementedError

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        """Up to ``limit`` entries due at ``now``, earliest first, moved to
        ``now + CLAIM_SECONDS`` in the same step so other sweepers skip them."""
        raise NotImplementedError

    def count(self) -> int:
        """How many entries the index holds."""
        raise NotImplementedError


# -- Redis --------------------------------------------------------------------------

_CLAIM = """
-- KEYS: due zset, locator hash (one shard); ARGV: now, limit, claimed until
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or ''
end
return out
"""
_SCRIPTS: dict[int, Any] = {}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisDueIndex(DueIndex):
    def __init__(self, cache: Any, client: Any) -> None:
        self.client = client
        self.keys = [str(cache.make_key(f"triggers:{{due:{k}}}")) for k in range(SHARDS)]

    def _shard(self, uid: str) -> str:
        return self.keys[zlib.crc32(uid.encode("utf-8")) % SHARDS]

    def add(self, entries: Iterable[DueEntry]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            key, member = self._shard(entry.uid), f"{entry.uid}{SEP}{entry.timer_id}"
            # The locator first: a claim never finds a member without one.
            pipe.hset(f"{key}:at", member, _dumps(entry.locator))
            pipe.zadd(key, {member: entry.due})
        if len(pipe):
            pipe.execute()

    def remove(self, pairs: Iterable[tuple[str, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for uid, timer_id in pairs:
            key, member = self._shard(uid), f"{uid}{SEP}{timer_id}"
            pipe.zrem(key, member)
            pipe.hdel(f"{key}:at", member)
        if len(pipe):
            pipe.execute()

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        script = _SCRIPTS.get(id(self.client))
        if script is None:
            script = _SCRIPTS[id(self.client)] = self.client.register_script(_CLAIM)
        found: list[DueEntry] = []
        for key in self.keys:
            if len(found) >= limit:
                break
            want = min(BATCH, limit - len(found))
            args = [repr(now), want, repr(now + CLAIM_SECONDS)]
            reply = script(keys=[key, f"{key}:at"], args=args, client=self.client)
            for i in range(0, len(reply), 3):
                uid, _, timer_id = _text(reply[i]).partition(SEP)
                raw = _text(reply[i + 2])
                found.append(DueEntry(uid, timer_id, float(reply[i + 1]), json.loads(raw or "{}")))
        found.sort(key=lambda e: e.due)
        return found

    def count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.zcard(key)
        return sum(int(n) for n in pipe.execute())


# -- database -----------------------------------------------------------------------


class DatabaseDueIndex(DueIndex):
    def __init__(self, alias: str) -> None:
        from ..timer_models import DueTimer

        self.alias = alias
        self.rows = DueTimer.objects.using(alias)
        self.model = DueTimer

    @staticmethod
    def _when(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=UTC)

    def add(self, entries: Iterable[DueEntry]) -> None:
        rows = [
            self.model(uid=e.uid, timer_id=e.timer_id, due=self._when(e.due), locator=e.locator)
            for e in entries
        ]
        if rows:
            self.rows.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["uid", "timer_id"],
                update_fields=["due", "locator"],
            )

    def remove(self, pairs: Iterable[tuple[str, str]]) -> None:
        from django.db.models import Q

        query = Q()
        for uid, timer_id in pairs:
            query |= Q(uid=uid, timer_id=timer_id)
        if query:
            self.rows.filter(query).delete()

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        from django.db import transaction

        until = self._when(now) + timedelta(seconds=CLAIM_SECONDS)
        with transaction.atomic(using=self.alias):
            rows = list(
                self.rows.select_for_update(skip_locked=True)
                .filter(due__lte=self._when(now))
                .order_by("due")[:limit]
            )
            if rows:
                self.rows.filter(pk__in=[r.pk for r in rows]).update(due=until)
        return [DueEntry(r.uid, r.timer_id, r.due.timestamp(), dict(r.locator)) for r in rows]

    def count(self) -> int:
        return int(self.rows.count())


# -- any other Django cache, or this process only: one table ------------------------


class TableDueIndex(DueIndex):
    """The index as one table ``{"uid<US>timer id": [due, locator]}``, read
    and changed whole by :meth:`_change` (atomically, as the subclass says)."""

    def _change(self, edit: Any) -> Any:
        """Run ``edit(table)`` on the table and keep what it left; its result."""
        raise NotImplementedError

    def add(self, entries: Iterable[DueEntry]) -> None:
        items = [(f"{e.uid}{SEP}{e.timer_id}", [e.due, e.locator]) for e in entries]
        if items:
            self._change(lambda table: table.update(items))

    def remove(self, pairs: Iterable[tuple[str, str]]) -> None:
        members = [f"{uid}{SEP}{timer_id}" for uid, timer_id in pairs]
        if members:
            self._change(lambda table: [table.pop(m, None) for m in members])

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        def edit(table: dict[str, list[Any]]) -> list[DueEntry]:
            due = sorted((v[0], m) for m, v in table.items() if v[0] <= now)[:limit]
            found = []
            for when, member in due:
                uid, _, timer_id = member.partition(SEP)
                found.append(DueEntry(uid, timer_id, when, table[member][1]))
                table[member][0] = now + CLAIM_SECONDS
            return found

        result: list[DueEntry] = self._change(edit)
        return result

    def count(self) -> int:
        result: int = self._change(len)
        return result


class DocumentDueIndex(TableDueIndex):
    """The table in one cache value, changed under a ``cache.add()`` mutex
    (atomic on every shared Django cache)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.key = "triggers:due"

    def _change(self, edit: Any) -> Any:
        token = uuid.uuid4().hex
        give_up = time.monotonic() + float(conf.get("LOCK_TIMEOUT"))
        while not self.cache.add(f"{self.key}:mutex", token, timeout=int(conf.get("LOCK_EXPIRE"))):
            if time.monotonic() > give_up:
                from ..exceptions import LockTimeoutError

                raise LockTimeoutError("(the due index)", float(conf.get("LOCK_TIMEOUT")))
            time.sleep(0.005)
        try:
            raw = self.cache.get(self.key)
            table: dict[str, list[Any]] = json.loads(raw) if raw else {}
            result = edit(table)
            self.cache.set(self.key, json.dumps(table), timeout=None)
            return result
        finally:
            if self.cache.get(f"{self.key}:mutex") == token:
                self.cache.delete(f"{self.key}:mutex")


class MemoryDueIndex(TableDueIndex):
    """The table in this process (a backend the module cannot place)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: dict[str, list[Any]] = {}

    def _change(self, edit: Any) -> Any:
        with self.lock:
            return edit(self.table)


_MEMORY = MemoryDueIndex()


def index_for(storage: BaseTriggerStorage) -> DueIndex:
    """The due index that ``storage``'s sessions use: told by what the
    storage exposes (a Django ``cache`` and its ``redis_client``, or a
    ``database`` alias), so this module imports no backend."""
    cache = getattr(storage, "cache", None)
    if cache is not None and hasattr(cache, "make_key"):
        client = getattr(storage, "redis_client", None)
        return RedisDueIndex(cache, client) if client is not None else DocumentDueIndex(cache)
    alias = getattr(storage, "database", None)
    if isinstance(alias, str):
        return DatabaseDueIndex(alias)
    return _MEMORY


#: (uid, timer id) of the entries this thread wrote ahead of a commit, so
#: after_commit does not write them again.
_AHEAD = threading.local()
#: Past this many, forget them (commits that failed leave theirs behind).
_AHEAD_LIMIT = 10_000


def write_ahead(storage: BaseTriggerStorage, timers: Mapping[str, dict[str, Any]]) -> None:
    """Add the entries of ``timers`` before the commit that stores them: a
    process dying in between leaves entries that point at nothing (the next
    sweep drops them), never a stored timer that no sweep would find."""
    index_for(storage).add(entry_for(storage, tid, timer) for tid, timer in timers.items())
    ahead: set[tuple[str, str]] = getattr(_AHEAD, "keys", None) or set()
    if len(ahead) > _AHEAD_LIMIT:
        ahead = set()
    ahead.update((storage.uid, tid) for tid in timers)
    _AHEAD.keys = ahead


def after_commit(storage: BaseTriggerStorage, changes: Changes) -> None:
    """Bring the due index in line with a commit that added or removed
    timers of ``storage``'s session (called once the commit succeeded)."""
    index = index_for(storage)
    if changes.timers_add:
        ahead: set[tuple[str, str]] = getattr(_AHEAD, "keys", None) or set()
        new = {}
        for tid, timer in sorted(changes.timers_add.items()):
            if (storage.uid, tid) in ahead:
                ahead.discard((storage.uid, tid))  # written before the commit
            else:
                new[tid] = timer
        if new:
            index.add(entry_for(storage, tid, timer) for tid, timer in new.items())
    if changes.timers_remove:
        gone = [(storage.uid, tid) for tid in sorted(changes.timers_remove)]
        try:
            index.remove(gone)
        except Exception:
            # The commit is done: raising would report it as failed, and an
            # entry left behind points at nothing (the sweep drops it).
            logger.warning(
                "session %r: %d applied or cancelled timer(s) stay in the due index "
                "until a sweep drops them",
                storage.uid,
                len(gone),
                exc_info=True,
            )
