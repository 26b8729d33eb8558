"""Session state in a relational database (PostgreSQL), through the Django
models of :mod:`triggers.models`.

Every locked operation on a session is one database transaction. Its first
read locks the session row (``SELECT ... FOR UPDATE``); that row lock is the
session lock, so no Redis is needed. The transaction commits (or, on any
error, rolls back) when the operation ends, so nothing half-written is ever
visible. A process that dies while holding the lock drops its connection and
PostgreSQL rolls its transaction back and releases the row at once.

A fire reads the index row of its trigger, the task rows named there, the
waiting rows of those (task, trigger) pairs with the instances they name,
and the latest kwargs of the triggers those tasks mention: what it costs
does not grow with the session (see :mod:`triggers.models` for the tables).

The primitives this backend implements (``_fetch``, ``_commit``,
``_make_lock``, ``_renew_lease``, ``_existing_parts``, ``get_init_kwargs``)
are those of :class:`~triggers.storages.cache.CacheStorageBackend`'s Redis
path, in SQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import (
    CharField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    OuterRef,
    Q,
    Value,
)
from django.db.models.functions import Now

from .. import conf
from ..exceptions import ConfigurationError, LockTimeoutError
from .base import BaseTriggerStorage, config_from_stored
from .transaction import Changes, Snapshot, build_index

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
            .alias(timeout_set=Func(Value("lock_timeout"), Value(timeout_ms), Value(True),
                                    function="set_config", output_field=CharField()))
            .filter(uid=self.storage.uid, timeout_set__isnull=False)
        )
        try:
            found = list(rows.values_list("id", "meta"))
            if not found:
                models.Session.objects.using(self.alias).bulk_create(
                    [models.Session(uid=self.storage.uid)], ignore_conflicts=True
                )
                found = list(rows.values_list("id", "meta"))
                self.inserted = True
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise LockTimeoutError(self.storage.uid, self.timeout) from None
            raise
        self.session_id, self.meta = found[0]

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


class DatabaseStorageBackend(BaseTriggerStorage):
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

    def _make_lock(self) -> Any:
        return DatabaseLock(self)

    def _operation_lock(self) -> DatabaseLock | None:
        txn = self._current
        return txn.lock if txn is not None and isinstance(txn.lock, DatabaseLock) else None

    # -- reads ----------------------------------------------------------------
    def _fetch(
        self, triggers: list[str], instances: list[str], tasks: list[str], everything: bool
    ) -> Snapshot:
        lock = self._operation_lock()
        if lock is not None:
            lock.ensure()
            return self._read(lock.session_id, lock.meta, triggers, instances, tasks, everything)
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
                .values_list("id", "meta")
            )
            if not row:
                return Snapshot(everything=everything)
            return self._read(row[0][0], row[0][1], triggers, instances, tasks, everything)

    def _read(
        self,
        session_id: int | None,
        meta: dict[str, Any] | None,
        triggers: list[str],
        instances: list[str],
        tasks: list[str],
        everything: bool,
    ) -> Snapshot:
        models = _models()
        db = self.database
        if everything:
            return self._read_all(session_id, meta)
        snap = Snapshot(meta=meta)
        task_order: dict[str, None] = {}
        if triggers:
            for trig, names in models.TriggerIndex.objects.using(db).filter(
                session_id=session_id, trigger__in=triggers
            ).values_list("trigger", "tasks"):
                snap.index[trig] = list(names or [])
            for trig in triggers:
                task_order.update(dict.fromkeys(snap.index.get(trig, [])))
        task_order.update(dict.fromkeys(tasks))
        kw_names: dict[str, None] = dict.fromkeys(triggers)
        if task_order:
            rows = models.SessionTask.objects.using(db).filter(
                session_id=session_id, name__in=list(task_order)
            )
            for name, config, number in rows.values_list("name", "config", "next_number"):
                snap.counters[name] = int(number)
                if config is not None:
                    cfg = config_from_stored(name, config)
                    snap.configs[name] = cfg
                    kw_names.update(dict.fromkeys(sorted(cfg.triggers)))
            for name in task_order:
                snap.counters.setdefault(name, 0)
        pairs = [(task, trig) for trig in triggers for task in snap.index.get(trig, [])]
        for pair in pairs:
            snap.waiting[pair] = []
        if pairs:
            record = models.SessionInstance.objects.using(db).filter(
                session_id=session_id, name=OuterRef("instance")
            )
            rows = (
                models.WaitingEntry.objects.using(db)
                .filter(session_id=session_id, trigger__in=triggers)
                .filter(task__in=list({task for task, _ in pairs}))
                .annotate(record=record.values("record")[:1])
                .values_list("task", "trigger", "instance", "record")
                .order_by("task", "trigger", "instance")
            )
            for task, trig, name, inst_record in rows:
                if (task, trig) in snap.waiting:
                    snap.waiting[(task, trig)].append(name)
                    if inst_record is not None:
                        snap.records[name] = inst_record
        wanted = [n for n in instances if n not in snap.records]
        if instances:
            left = ExpressionWrapper(F("lease_expires") - Now(), output_field=DurationField())
            rows = (
                models.SessionInstance.objects.using(db)
                .filter(session_id=session_id, name__in=instances)
                .annotate(lease_left=left)
                .values_list("name", "record", "lease_left")
            )
            for name, inst_record, lease_left in rows:
                if name in wanted:
                    snap.records[name] = inst_record
                if lease_left is not None and lease_left > timedelta(0):
                    snap.leases[name] = int(lease_left.total_seconds() * 1000)
        if kw_names:
            snap.kwargs_known.update(kw_names)
            for trig, kwargs in models.LatestKwargs.objects.using(db).filter(
                session_id=session_id, trigger__in=list(kw_names)
            ).values_list("trigger", "kwargs"):
                snap.latest_kwargs[trig] = kwargs
        return snap

    def _read_all(self, session_id: int | None, meta: dict[str, Any] | None) -> Snapshot:
        models = _models()
        db = self.database
        snap = Snapshot(meta=meta, everything=True)
        for name, config, number in (
            models.SessionTask.objects.using(db)
            .filter(session_id=session_id)
            .values_list("name", "config", "next_number")
        ):
            snap.counters[name] = int(number)
            if config is not None:
                snap.configs[name] = config_from_stored(name, config)
        snap.index = build_index(snap.configs)
        left = ExpressionWrapper(F("lease_expires") - Now(), output_field=DurationField())
        for name, record, lease_left in (
            models.SessionInstance.objects.using(db)
            .filter(session_id=session_id)
            .annotate(lease_left=left)
            .values_list("name", "record", "lease_left")
        ):
            snap.records[name] = record
            if lease_left is not None and lease_left > timedelta(0):
                snap.leases[name] = int(lease_left.total_seconds() * 1000)
        for task, trig, name in (
            models.WaitingEntry.objects.using(db)
            .filter(session_id=session_id)
            .values_list("task", "trigger", "instance")
            .order_by("task", "trigger", "instance")
        ):
            snap.waiting.setdefault((task, trig), []).append(name)
        for trig, kwargs in (
            models.LatestKwargs.objects.using(db)
            .filter(session_id=session_id)
            .values_list("trigger", "kwargs")
        ):
            snap.latest_kwargs[trig] = kwargs
        snap.kwargs_known = set(snap.latest_kwargs)
        return snap

    def _existing_parts(self) -> set[str] | None:
        models = _models()
        db = self.database
        session = OuterRef("pk")

        def exists(model: Any, **filters: Any) -> Exists:
            return Exists(model.objects.using(db).filter(session_id=session, **filters))

        parts = {
            "config": exists(models.SessionTask, config__isnull=False),
            "index": exists(models.TriggerIndex),
            "instances": exists(models.SessionInstance),
            "counters": exists(models.SessionTask, next_number__gt=0),
            "kwargs": exists(models.LatestKwargs),
        }
        found = list(
            models.Session.objects.using(db).filter(uid=self.uid).values(**parts)[:1]
        )
        if not found:
            return set()
        return {name for name, present in found[0].items() if present}

    # -- writes ---------------------------------------------------------------
    def _commit(self, lock: Any, changes: Changes, release: bool) -> None:
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
                self._write(lock.session_id, changes)
            if release:
                lock.commit()
        finally:
            if release:
                lock.release()

    def _write(self, sid: int | None, changes: Changes) -> None:
        models = _models()
        db = self.database
        task_rows = set(changes.configs) | set(changes.counters)
        if task_rows:
            rows = [
                models.SessionTask(
                    session_id=sid,
                    name=name,
                    config=(
                        changes.configs[name].to_directives() if name in changes.configs else None
                    ),
                    next_number=changes.counters.get(name, 0),
                )
                for name in sorted(task_rows)
            ]
            both = [r for r in rows if r.name in changes.configs and r.name in changes.counters]
            configs_only = [r for r in rows if r.name not in changes.counters]
            counters_only = [r for r in rows if r.name not in changes.configs]
            for group, fields in (
                (both, ["config", "next_number"]),
                (configs_only, ["config"]),
                (counters_only, ["next_number"]),
            ):
                if group:
                    models.SessionTask.objects.using(db).bulk_create(
                        group,
                        update_conflicts=True,
                        unique_fields=["session", "name"],
                        update_fields=fields,
                    )
        if changes.index is not None:
            models.TriggerIndex.objects.using(db).filter(session_id=sid).delete()
            models.TriggerIndex.objects.using(db).bulk_create(
                [
                    models.TriggerIndex(session_id=sid, trigger=trig, tasks=names)
                    for trig, names in sorted(changes.index.items())
                ]
            )
        if changes.instances:
            models.SessionInstance.objects.using(db).bulk_create(
                [
                    models.SessionInstance(
                        session_id=sid, name=name, task=inst.config.name, record=inst.to_record()
                    )
                    for name, inst in sorted(changes.instances.items())
                ],
                update_conflicts=True,
                unique_fields=["session", "name"],
                update_fields=["task", "record"],
            )
        if changes.waiting_remove:
            gone = Q()
            for task, trig, name in sorted(changes.waiting_remove):
                gone |= Q(task=task, trigger=trig, instance=name)
            models.WaitingEntry.objects.using(db).filter(gone, session_id=sid).delete()
        if changes.waiting_add:
            models.WaitingEntry.objects.using(db).bulk_create(
                [
                    models.WaitingEntry(session_id=sid, task=task, trigger=trig, instance=name)
                    for task, trig, name in sorted(changes.waiting_add)
                ],
                ignore_conflicts=True,
            )
        if changes.latest_kwargs:
            models.LatestKwargs.objects.using(db).bulk_create(
                [
                    models.LatestKwargs(session_id=sid, trigger=trig, kwargs=kwargs)
                    for trig, kwargs in sorted(changes.latest_kwargs.items())
                ],
                update_conflicts=True,
                unique_fields=["session", "trigger"],
                update_fields=["kwargs"],
            )
        instances = models.SessionInstance.objects.using(db).filter(session_id=sid)
        for name, (token, ms) in sorted(changes.leases_set.items()):
            instances.filter(name=name).update(
                lease_token=token, lease_expires=Now() + timedelta(milliseconds=ms)
            )
        if changes.leases_drop:
            instances.filter(name__in=sorted(changes.leases_drop)).update(
                lease_token=None, lease_expires=None
            )
        session = models.Session.objects.using(db).filter(pk=sid)
        fields: dict[str, Any] = {"version": F("version") + 1, "updated_at": Now()}
        if changes.meta is not None:
            fields["meta"] = changes.meta
        session.update(**fields)

    def _renew_lease(self, name: str, token: str, ms: int) -> bool:
        # One statement (its own transaction): no session lock needed.
        models = _models()
        updated = (
            models.SessionInstance.objects.using(self.database)
            .filter(session__uid=self.uid, name=name, lease_token=token)
            .update(lease_expires=Now() + timedelta(milliseconds=ms))
        )
        return bool(updated)

    def delete(self) -> None:
        """Remove the whole session (configuration, instances, history)."""
        with self.transaction() as txn:
            lock = txn.lock
            lock.ensure()
            lock.dirty = True
            _models().Session.objects.using(self.database).filter(pk=lock.session_id).delete()

