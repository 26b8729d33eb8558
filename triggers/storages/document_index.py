"""The session index on a cache that is not Redis: one JSON document
listing the uids (written when a process first writes a session, then at
most once a minute per session), while each session's document records its
last activity; listing reads every listed session's document. That path is
for development and single-process use, like the rest of the non-Redis
path. :mod:`triggers.storages.session_index` has the Redis index.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["DocumentSessionIndex"]

#: Seconds between a process's re-checks that the document index lists a uid.
DOCUMENT_RECHECK = 60.0

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
        return [(uid, datetime.fromtimestamp(score, tz=UTC)) for uid, score in rows[offset:end]]

    def count(self, prefix: str) -> int:
        return len(self._entries(prefix))
