"""Row-level reads and writes of the database storage backend
(:mod:`triggers.storages.database`): the SQL form of the cache backend's
fetch and commit scripts, over the tables of :mod:`triggers.models`.

:func:`read_rows` loads what one operation asks for (the index rows of its
triggers, the task rows they name, the waiting rows of those pairs with the
records of the instances they list, the seed kwargs of a task that gets a
new instance, named instances whole with their leases, pending timers, an
idempotency key); :func:`write_changes` writes one
transaction's :class:`~triggers.storages.transaction.Changes` with one
statement per kind of row. Both run inside the caller's transaction.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.db.models import DurationField, ExpressionWrapper, F, Func, OuterRef, Q, Subquery
from django.db.models.functions import Now

from .base import config_from_stored
from .data import UNLESS, Changes, FetchRequest, Snapshot, build_index, max_idempotency_keys

__all__ = ["read_all", "read_rows", "write_changes"]


def _models() -> Any:
    from .. import models

    return models


def _lease_left() -> ExpressionWrapper:
    """Milliseconds a lease has left, by the database's clock."""
    return ExpressionWrapper(F("lease_expires") - Now(), output_field=DurationField())


def _merge_received(db: str, session_id: int | None, records: dict[str, dict[str, Any]]) -> None:
    """Make the records of ``records`` whole: put what each instance
    received (its ``triggers_received`` rows) into it. Records of an older
    release hold their kwargs already (no ``progress``) and are left as
    they are."""
    split = [name for name, record in records.items() if "progress" in record]
    if not split:
        return
    for name in split:
        records[name]["kwargs"], records[name]["abandon_state"] = {}, {}
    rows = (
        _models()
        .ReceivedKwargs.objects.using(db)
        .filter(session_id=session_id, instance__in=split)
        .values_list("instance", "field", "kwargs")
    )
    for name, field, kwargs in rows:
        if field.startswith(UNLESS):
            records[name]["abandon_state"][field[len(UNLESS) :]] = kwargs
        else:
            records[name]["kwargs"][field] = kwargs


def _extras(db: str, session_id: int | None, request: FetchRequest, snap: Snapshot) -> None:
    """The idempotency key and pending timers a request asks for."""
    models = _models()
    if request.idempotency_key is not None:
        snap.idempotency_seen = (
            models.IdempotencyKey.objects.using(db)
            .filter(session_id=session_id, key=request.idempotency_key, expires__gt=time.time())
            .exists()
        )
    if request.timers or request.everything:
        snap.timers = dict(
            models.SessionTimer.objects.using(db)
            .filter(session_id=session_id)
            .values_list("timer_id", "timer")
        )


def read_rows(
    db: str,
    session: tuple[int | None, dict[str, Any] | None, dict[str, int]],
    request: FetchRequest,
) -> Snapshot:
    """``session`` is the session row's ``(id, meta, counters)``."""
    session_id = session[0]
    if request.everything:
        snap = read_all(db, session)
    else:
        snap = _read_some(db, session, request)
    _extras(db, session_id, request, snap)
    return snap


def _read_some(
    db: str,
    session: tuple[int | None, dict[str, Any] | None, dict[str, int]],
    request: FetchRequest,
) -> Snapshot:
    models = _models()
    session_id, meta, counters = session
    triggers, instances, tasks = request.triggers, request.instances, request.tasks
    snap = Snapshot(meta=meta)
    kw_names: dict[str, None] = dict.fromkeys([*triggers, *request.kwargs])
    wanted_tasks = Q(name__in=tasks) if tasks else Q(pk__in=[])
    if triggers:
        # The tasks the index rows of these triggers list, in the same
        # statement (the index is derived from the configs, so it is
        # rebuilt from them below).
        indexed = (
            models.TriggerIndex.objects.using(db)
            .filter(session_id=session_id, trigger__in=triggers)
            .annotate(task=Func(F("tasks"), function="jsonb_array_elements_text"))
            .values("task")
        )
        wanted_tasks |= Q(name__in=Subquery(indexed))
    if triggers or tasks:
        rows = models.SessionTask.objects.using(db).filter(wanted_tasks, session_id=session_id)
        for name, config in rows.values_list("name", "config"):
            snap.configs[name] = config_from_stored(name, config)
    for trig in triggers:
        names = sorted(n for n, cfg in snap.configs.items() if trig in cfg.triggers)
        if names:
            snap.index[trig] = names
    for name in [*tasks, *(n for names in snap.index.values() for n in names)]:
        snap.counters[name] = int(counters.get(name, 0))
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
    # Seed kwargs only for a task this fire will give a new instance (none
    # yet, or its andEvery trigger with no instance waiting on it).
    for task, trig in pairs:
        cfg = snap.configs.get(task)
        if cfg is not None and (
            not counters.get(task) or (cfg.and_every == trig and not snap.waiting[(task, trig)])
        ):
            kw_names.update(dict.fromkeys(sorted(cfg.triggers)))
    # Whole records for the named instances and those one requirement away
    # from ready (they may be dispatched and returned by this fire).
    whole = [
        n
        for n, r in snap.records.items()
        if "progress" in r and int(r["progress"].get("after", 0)) <= 1
    ]
    wanted = [n for n in instances if n not in snap.records]
    if instances:
        rows = (
            models.SessionInstance.objects.using(db)
            .filter(session_id=session_id, name__in=instances)
            .annotate(lease_left=_lease_left())
            .values_list("name", "record", "lease_left")
        )
        for name, inst_record, lease_left in rows:
            if name in wanted:
                snap.records[name] = inst_record
            if lease_left is not None and lease_left > timedelta(0):
                snap.leases[name] = int(lease_left.total_seconds() * 1000)
    named = {n: snap.records[n] for n in [*instances, *whole] if n in snap.records}
    _merge_received(db, session_id, named)
    if kw_names:
        snap.kwargs_known.update(kw_names)
        for trig, kwargs in (
            models.LatestKwargs.objects.using(db)
            .filter(session_id=session_id, trigger__in=list(kw_names))
            .values_list("trigger", "kwargs")
        ):
            snap.latest_kwargs[trig] = kwargs
    return snap


def read_all(
    db: str, session: tuple[int | None, dict[str, Any] | None, dict[str, int]]
) -> Snapshot:
    """Every row of the session (``session``: its ``(id, meta, counters)``)."""
    models = _models()
    session_id, meta, counters = session
    snap = Snapshot(meta=meta, everything=True)
    snap.counters = {name: int(n) for name, n in counters.items()}
    for name, config in (
        models.SessionTask.objects.using(db)
        .filter(session_id=session_id)
        .values_list("name", "config")
    ):
        snap.configs[name] = config_from_stored(name, config)
    snap.index = build_index(snap.configs)
    for name, record, lease_left in (
        models.SessionInstance.objects.using(db)
        .filter(session_id=session_id)
        .annotate(lease_left=_lease_left())
        .values_list("name", "record", "lease_left")
    ):
        snap.records[name] = record
        if lease_left is not None and lease_left > timedelta(0):
            snap.leases[name] = int(lease_left.total_seconds() * 1000)
    _merge_received(db, session_id, snap.records)
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


def _upsert(db: str, model: Any, rows: list[Any], unique: list[str], update: list[str]) -> None:
    """Insert ``rows`` of ``model`` in one statement; a row whose
    ``(session, *unique)`` exists already gets the new ``update`` fields."""
    model.objects.using(db).bulk_create(
        rows, update_conflicts=True, unique_fields=["session", *unique], update_fields=update
    )


def write_changes(
    db: str, sid: int | None, changes: Changes, counters: dict[str, int] | None = None
) -> None:
    """Write ``changes``; ``counters`` are the session row's counters as the
    operation read them under the lock (the changed ones are merged in)."""
    models = _models()
    if changes.configs:
        _upsert(
            db,
            models.SessionTask,
            [
                models.SessionTask(session_id=sid, name=name, config=cfg.to_directives())
                for name, cfg in sorted(changes.configs.items())
            ],
            ["name"],
            ["config"],
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
        _upsert(
            db,
            models.SessionInstance,
            [
                models.SessionInstance(
                    session_id=sid,
                    name=name,
                    task=inst.config.name,
                    record=inst.to_record(kwargs=False),
                )
                for name, inst in sorted(changes.instances.items())
            ],
            ["name"],
            ["task", "record"],
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
        _upsert(
            db,
            models.LatestKwargs,
            [
                models.LatestKwargs(session_id=sid, trigger=trig, kwargs=kwargs)
                for trig, kwargs in sorted(changes.latest_kwargs.items())
            ],
            ["trigger"],
            ["kwargs"],
        )
    _write_extras(db, sid, changes)
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
    values: dict[str, Any] = {"version": F("version") + 1, "updated_at": Now()}
    if changes.meta is not None:
        values["meta"] = changes.meta
    if changes.counters:
        values["counters"] = {**(counters or {}), **changes.counters}
    session.update(**values)


def _write_extras(db: str, sid: int | None, changes: Changes) -> None:
    """What instances received, the session's timers and idempotency keys."""
    models = _models()
    if changes.received:
        _upsert(
            db,
            models.ReceivedKwargs,
            [
                models.ReceivedKwargs(session_id=sid, instance=name, field=field, kwargs=kwargs)
                for name, fields in sorted(changes.received.items())
                for field, kwargs in sorted(fields.items())
            ],
            ["instance", "field"],
            ["kwargs"],
        )
    if changes.received_drop:
        gone = Q()
        for name, fields in sorted(changes.received_drop.items()):
            gone |= Q(instance=name, field__in=sorted(fields))
        models.ReceivedKwargs.objects.using(db).filter(gone, session_id=sid).delete()
    if changes.timers_add:
        _upsert(
            db,
            models.SessionTimer,
            [
                models.SessionTimer(session_id=sid, timer_id=timer_id, timer=timer)
                for timer_id, timer in sorted(changes.timers_add.items())
            ],
            ["timer_id"],
            ["timer"],
        )
    if changes.timers_remove:
        models.SessionTimer.objects.using(db).filter(
            session_id=sid, timer_id__in=sorted(changes.timers_remove)
        ).delete()
    if changes.idempotency is not None:
        key, expires = changes.idempotency
        keys = models.IdempotencyKey.objects.using(db)
        row = models.IdempotencyKey(session_id=sid, key=key, expires=float(expires))
        _upsert(db, models.IdempotencyKey, [row], ["key"], ["expires"])
        # Expired keys go as new ones come, and past IDEMPOTENCY_MAX_KEYS
        # those expiring first, so a session's keys stay bounded (one query).
        mine = keys.filter(session_id=sid)
        beyond = mine.order_by("-expires", "-id").values("id")[max_idempotency_keys() :]
        mine.filter(Q(expires__lte=time.time()) | Q(id__in=beyond)).delete()
