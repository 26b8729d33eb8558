"""Session state in a relational database (PostgreSQL), through the Django
models of :mod:`triggers.models`.

Every locked operation on a session is one database transaction. Its first
read locks the session row (``SELECT ... FOR UPDATE``); that row lock is the
session lock, so no Redis is needed. The transaction commits (or, on any
error, rolls back) when the operation ends, so nothing half-written is ever
visible. A process that dies while holding the lock drops its connection and
PostgreSQL rolls its transaction back and releases the row at once.

A fire reads the index row of its trigger, the task rows named there and
the waiting rows of those (task, trigger) pairs with the records of the
instances they name (without what those received: one row per received
trigger, read only for an instance asked for by name or about to be ready),
plus the latest kwargs of a task's triggers only when the fire creates an
instance of it. What it costs does not grow with the session nor with the
width of a task's ``after`` (see :mod:`triggers.models` for the tables).

It implements the indexed tier (:class:`~triggers.storages.base.IndexedStorage`:
``fetch``, ``commit``, ``make_lock``, ``renew_lease``, ``existing_parts``,
``delete``), as the Redis backend does, in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import (
    CharField,
    Exists,
    Func,
    OuterRef,
    Value,
)
from django.db.models.functions import Now

from .. import conf
from ..exceptions import ConfigurationError, LockHeldError, LockTimeoutError
from .base import IndexedStorage
from .data import Changes, FetchRequest, Snapshot
from .database_rows import read_rows, write_changes

__all__ = ["DatabaseStorageBackend", "DatabaseLock"]

#: Database vendors the backend runs on (row locks that block other
#: processes, ``INSERT ... ON CONFLICT``).
SUPPORTED_VENDORS = ("postgresql",)
#: SQLSTATE of PostgreSQL's "lock_not_available" (``lock_timeout`` expired).
LOCK_NOT_AVAILABLE = "55P03"


def _models() -> Any:
    # Imported lazily: this module is imported by the storage registry
    # before Django's app registry may be ready.
    from .. import models

    return models


class DatabaseLock:
    """The session lock of one operation: a database transaction holding the
    session row ``FOR UPDATE``.

    The transaction opens and the row is locked on the operation's first
    read (or its first write, if it reads nothing); an operation that does
    neither never touches the database.
    """

    token = None

    def __init__(self, storage: DatabaseStorageBackend) -> None:
        self.storage = storage
        self.alias = storage.database
        self.timeout = float(conf.get("LOCK_TIMEOUT"))
        self._atomic: Any = None
        self.session_id: int | None = None
        self.meta: dict[str, Any] | None = None
        self.updated_at: datetime | None = None
        self.counters: dict[str, int] = {}
        #: The row was inserted by this operation (an empty session).
        self.inserted = False
        #: Something was written outside ``Changes`` (``delete()``).
        self.dirty = False

    @property
    def pending(self) -> bool:
        return self._atomic is None

    def acquire_within(self, timeout: float) -> None:
        self.timeout = timeout

    def ensure(self) -> None:
        """Open the transaction and lock the session row (once)."""
        if self._atomic is not None:
            return
        self._atomic = transaction.atomic(using=self.alias)
        self._atomic.__enter__()
        try:
            self._lock_row()
        except BaseException:
            self.release()
            raise

    def _lock_row(self) -> None:
        models = _models()
        # The wait for the row lock ends with an error instead of going on
        # forever: the row filter sets lock_timeout for this transaction
        # (set_config(..., true) is SET LOCAL), in the same round trip; it is
        # evaluated while scanning, before the row is locked.
        timeout_ms = str(max(1, int(self.timeout * 1000)))
        rows = (
            models.Session.objects.using(self.alias)
            .select_for_update()
            .alias(
                timeout_set=Func(
                    Value("lock_timeout"),
                    Value(timeout_ms),
                    Value(True),
                    function="set_config",
                    output_field=CharField(),
                )
            )
            .filter(uid=self.storage.uid, timeout_set__isnull=False)
        )
        try:
            fields = ("id", "meta", "counters", "updated_at")
            found = list(rows.values_list(*fields))
            if not found:
                models.Session.objects.using(self.alias).bulk_create(
                    [models.Session(uid=self.storage.uid)], ignore_conflicts=True
                )
                found = list(rows.values_list(*fields))
                self.inserted = True
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise LockTimeoutError(self.storage.uid, self.timeout) from None
            raise
        self.session_id, self.meta, self.counters, self.updated_at = found[0]

    def commit(self) -> None:
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            atomic.__exit__(None, None, None)

    def forget(self) -> None:
        self.release()

    def release(self) -> None:
        """Roll back whatever this operation did not commit."""
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            rollback = _Rollback()
            atomic.__exit__(_Rollback, rollback, None)


class _Rollback(Exception):
    """Tells ``transaction.atomic`` to roll back (never raised)."""


class DatabaseStorageBackend(IndexedStorage):
    """Keeps sessions in the database ``database`` (a ``DATABASES`` alias;
    default: ``TRIGGERS['STORAGE_OPTIONS']['database']``, else ``'default'``).
    Sessions are kept until deleted; there is no timeout."""

    name = "database"

    def __init__(self, uid: str, database: str | None = None) -> None:
        super().__init__(uid)
        options = conf.get("STORAGE_OPTIONS") or {}
        self.database = database or options.get("database") or "default"
        if self.database not in connections.settings:
            raise ConfigurationError(
                f"database alias {self.database!r} is not configured in DATABASES; "
                "set TRIGGERS['STORAGE_OPTIONS'] = {'database': '<alias>'} to one that is",
                directive="STORAGE_OPTIONS",
            )
        vendor = connections[self.database].vendor
        if vendor not in SUPPORTED_VENDORS:
            raise ConfigurationError(
                f"the database storage backend needs PostgreSQL; database alias "
                f"{self.database!r} is {vendor} (its locks do not keep other processes out). "
                "Point TRIGGERS['STORAGE_OPTIONS']['database'] at a PostgreSQL alias, or use "
                "TRIGGERS['STORAGE'] = 'cache' with a Redis cache",
                directive="STORAGE_OPTIONS",
            )

    def get_init_kwargs(self) -> dict[str, Any]:
        return {"database": self.database}

    def make_lock(self) -> Any:
        return DatabaseLock(self)

    def _operation_lock(self) -> DatabaseLock | None:
        txn = self.current_transaction
        return txn.lock if txn is not None and isinstance(txn.lock, DatabaseLock) else None

    # -- reads ----------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> Snapshot:
        lock = self._operation_lock()
        if lock is not None:
            lock.ensure()
            session = (lock.session_id, lock.meta, lock.counters)
            return read_rows(self.database, session, request)
        # Outside an operation: one read-only snapshot, so every part comes
        # from the same moment (no lock: writers are not held up).
        connection = connections[self.database]
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=self.database):
            if outermost:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = list(
                _models()
                .Session.objects.using(self.database)
                .filter(uid=self.uid)
                .values_list("id", "meta", "counters")
            )
            if not row:
                return Snapshot(everything=request.everything)
            return read_rows(self.database, row[0], request)

    def existing_parts(self) -> set[str] | None:
        """Which parts of the session have rows. Inside an operation the
        answer is ``None`` (cannot be lost): every write is one transaction
        and a session's rows are only ever deleted together, so no part can
        vanish on its own the way a Redis key can be evicted."""
        if self.current_transaction is not None:
            return None
        models = _models()
        db = self.database
        session = OuterRef("pk")

        def exists(model: Any, **filters: Any) -> Exists:
            return Exists(model.objects.using(db).filter(session_id=session, **filters))

        parts = {
            "config": exists(models.SessionTask),
            "index": exists(models.TriggerIndex),
            "instances": exists(models.SessionInstance),
            "waiting": exists(models.WaitingEntry),
            "kwargs": exists(models.LatestKwargs),
        }
        rows = models.Session.objects.using(db).filter(uid=self.uid)
        found = list(rows.values("counters", **parts)[:1])
        if not found:
            return set()
        present = {name for name in parts if found[0][name]}
        return present | ({"counters"} if found[0]["counters"] else set())

    # -- writes ---------------------------------------------------------------
    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        assert isinstance(lock, DatabaseLock)
        try:
            if not changes and not lock.dirty:
                # Nothing to write (an empty row this operation made for
                # its lock is rolled back with it).
                if release:
                    lock.release()
                return
            lock.ensure()
            if changes:
                write_changes(self.database, lock.session_id, changes, lock.counters)
            if release:
                lock.commit()
        finally:
            if release:
                lock.release()

    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        # One statement (its own transaction): no session lock needed.
        models = _models()
        updated = (
            models.SessionInstance.objects.using(self.database)
            .filter(session__uid=self.uid, name=name, lease_token=token)
            .update(lease_expires=Now() + timedelta(milliseconds=ms))
        )
        return bool(updated)

    # == session index and deletion (retention; see triggers.sessions) =======
    # The session rows are the index: ``updated_at`` is the last write.

    @classmethod
    def _sessions(cls, options: Mapping[str, Any], prefix: str) -> Any:
        alias = options.get("database") or (conf.get("STORAGE_OPTIONS") or {}).get("database")
        rows = _models().Session.objects.using(alias or "default")
        return rows.filter(uid__startswith=prefix) if prefix else rows

    @classmethod
    def list_sessions(
        cls,
        options: Mapping[str, Any],
        *,
        prefix: str = "",
        offset: int = 0,
        limit: int | None = None,
        older_than: datetime | None = None,
    ) -> list[tuple[str, datetime]]:
        rows = cls._sessions(options, prefix)
        if older_than is not None:
            rows = rows.filter(updated_at__lt=older_than)
        rows = rows.order_by("-updated_at", "uid").values_list("uid", "updated_at")
        end = None if limit is None else offset + limit
        return [(uid, when) for uid, when in rows[offset:end]]

    @classmethod
    def count_sessions(cls, options: Mapping[str, Any], *, prefix: str = "") -> int:
        return int(cls._sessions(options, prefix).count())

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        """Remove the whole session (configuration, instances, history) in
        one transaction under its row lock; with ``idle_before``, only if its
        last write was before then. ``True`` if a session was removed."""
        if self.current_transaction is not None:
            raise LockHeldError(
                f"delete() of session {self.uid!r} inside a block that holds its lock; "
                "call it after the block"
            )
        with self.transaction() as txn:
            lock = txn.lock
            lock.ensure()
            if lock.inserted:
                return False  # there was none (the row made for the lock is rolled back)
            if idle_before is not None and lock.updated_at >= idle_before:
                return False
            lock.dirty = True
            _models().Session.objects.using(self.database).filter(pk=lock.session_id).delete()
        return True
