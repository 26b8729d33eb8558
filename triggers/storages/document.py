"""The document tier: a backend that stores a session as one JSON document
and writes it back only if nobody wrote it since it was read.

A backend implements two methods:

- :meth:`DocumentStorage.read` returns ``(document, version)``: the session
  as plain JSON-ready data (``None`` if there is none) and an opaque version
  (anything the backend can compare: a counter, a row version, a hash);
- :meth:`DocumentStorage.write` stores ``document`` (or deletes the session
  when it is ``None``) only if the stored version is still
  ``expected_version``, and says whether it did -- one atomic step, e.g.
  ``UPDATE ... WHERE version = %s`` or Redis ``WATCH``/``MULTI``.

Everything else is built on them: an operation reads the whole document
once, the engine changes it, and the commit writes it back with the version
it read. If another process wrote in between, the commit writes nothing and
raises :class:`~triggers.exceptions.WriteConflictError`, and the manager runs
the operation again on the new document, so no update is lost and nothing is
dispatched twice across processes. Threads of one process take turns on a
process-local lock first, so they never conflict with each other.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

from ..exceptions import LockHeldError, WriteConflictError
from ..locking import LocalLock
from ..types import TaskConfig, TaskInstance
from .base import BaseTriggerStorage
from .data import Changes, FetchRequest, Snapshot, apply_changes, full_snapshot

__all__ = ["DocumentStorage"]

#: How often a write that does not depend on what was read (a lease
#: renewal, a deletion, a commit that fetched nothing) is tried again after
#: another process won.
BLIND_WRITE_ATTEMPTS = 50

#: Longest pause (seconds) after losing a race, before the conflict is raised.
CONFLICT_PAUSE = 0.02

State = tuple[dict[str, TaskConfig], dict[str, TaskInstance], dict[str, Any]]


class DocumentLock(LocalLock):
    """The lock of one document-tier operation: a process-local lock, plus
    the document the operation read and its version (the commit writes
    against that version)."""

    def __init__(self, name: str, uid: str) -> None:
        super().__init__(name, uid)
        self.loaded: tuple[State, Any] | None = None


class DocumentStorage(BaseTriggerStorage):
    """Base class of document-tier backends: implement :meth:`read` and
    :meth:`write` (and :meth:`get_init_kwargs` if the constructor takes
    options)."""

    # -- the two methods a backend implements ------------------------------
    def read(self) -> tuple[dict[str, Any] | None, Any]:
        """``(document, version)``: the stored session (``None`` if there is
        none) and the version :meth:`write` compares against."""
        raise NotImplementedError

    def write(self, document: dict[str, Any] | None, expected_version: Any) -> bool:
        """Store ``document`` (delete the session if ``None``) only if the
        stored version is still ``expected_version``, atomically; ``True`` if
        it was written. ``document`` is plain JSON-ready data."""
        raise NotImplementedError

    # -- the indexed interface, on top of them -------------------------------
    def make_lock(self) -> DocumentLock:
        return DocumentLock(f"{type(self).__name__}:{self.uid}", self.uid)

    def _read_state(self) -> tuple[State, Any]:
        document, version = self.read()
        return self._deserialize(document), version

    def fetch(self, request: FetchRequest) -> Snapshot:
        txn = self.current_transaction
        lock = txn.lock if txn is not None else None
        if isinstance(lock, DocumentLock):
            # One read per operation: later fetches see the same document,
            # the one the commit's version check is against.
            if lock.loaded is None:
                lock.loaded = self._read_state()
            state = lock.loaded[0]
        else:
            state = self._read_state()[0]
        return full_snapshot(*state, request)

    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        try:
            if changes:
                if isinstance(lock, DocumentLock) and lock.loaded is not None:
                    state, version = lock.loaded
                    if not self._write_state(state, version, changes):
                        # A moment's pause, random so racing writers drift
                        # apart before the manager runs the operation again.
                        time.sleep(random.uniform(0, CONFLICT_PAUSE))
                        raise WriteConflictError(self.uid)
                else:
                    # Nothing was read, so the changes apply to any version.
                    self._retry(lambda: self._write_state(*self._read_state(), changes))
        finally:
            if release:
                lock.release()

    def _write_state(self, state: State, version: Any, changes: Changes) -> bool:
        configs, insts, metas = state
        apply_changes(configs, insts, metas, changes)
        return self.write(self.document_of(configs, insts, metas), version)

    @staticmethod
    def document_of(
        configs: dict[str, TaskConfig], insts: dict[str, TaskInstance], metas: dict[str, Any]
    ) -> dict[str, Any]:
        """The JSON-ready document of a session (``activity``: the time of
        this write, for ``delete(idle_before=...)``)."""
        return {
            "tasks": {n: c.to_directives() for n, c in configs.items()},
            "instances": {n: i.to_record() for n, i in insts.items()},
            "metadata": metas,
            "activity": time.time(),
        }

    def _retry(self, attempt: Any) -> Any:
        """Run a write that does not depend on what was read until it is not
        beaten by another process's write."""
        for _ in range(BLIND_WRITE_ATTEMPTS):
            result = attempt()
            if result is not False:
                return result
        raise WriteConflictError(self.uid)

    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        # Lock-free: read, check the token, write back if unchanged.
        def attempt() -> bool | None:
            document, version = self.read()
            leases = ((document or {}).get("metadata") or {}).get("leases") or {}
            info = leases.get(name)
            if not info or info.get("token") != token:
                return None
            info["expires"] = time.time() + ms / 1000
            return self.write(document, version)

        return self._retry(attempt) is True

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        if self.current_transaction is not None:
            raise LockHeldError(
                f"delete() of session {self.uid!r} inside a block that holds its lock; "
                "call it after the block"
            )

        def attempt() -> bool | None:
            document, version = self.read()
            if document is None:
                return None
            active = float(document.get("activity") or 0)
            if idle_before is not None and active >= idle_before.timestamp():
                return None
            return self.write(None, version)

        return self._retry(attempt) is True
