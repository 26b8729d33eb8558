"""Row-level reads and writes of the database storage backend
(:mod:`triggers.storages.database`): the SQL form of the cache backend's
fetch and commit scripts, over the tables of :mod:`triggers.models`.

:func:`read_rows` loads what one operation asks for (the index rows of its
triggers, the task rows they name, the waiting rows of those pairs with the
instances they list, the latest kwargs of the triggers those tasks mention,
named instances and their leases); :func:`write_changes` writes one
transaction's :class:`~triggers.storages.transaction.Changes` with one
statement per kind of row. Both run inside the caller's transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import DurationField, ExpressionWrapper, F, OuterRef, Q
from django.db.models.functions import Now

from .base import config_from_stored
from .transaction import Changes, Snapshot, build_index

__all__ = ["read_all", "read_rows", "write_changes"]


def _models() -> Any:
    from .. import models

    return models


def _lease_left() -> ExpressionWrapper:
    """Milliseconds a lease has left, by the database's clock."""
    return ExpressionWrapper(F("lease_expires") - Now(), output_field=DurationField())


def read_rows(
    db: str,
    session_id: int | None,
    meta: dict[str, Any] | None,
    triggers: list[str],
    instances: list[str],
    tasks: list[str],
    everything: bool,
) -> Snapshot:
    models = _models()
    if everything:
        return read_all(db, session_id, meta)
    snap = Snapshot(meta=meta)
    task_order: dict[str, None] = {}
    if triggers:
        for trig, names in (
            models.TriggerIndex.objects.using(db)
            .filter(session_id=session_id, trigger__in=triggers)
            .values_list("trigger", "tasks")
        ):
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
    if kw_names:
        snap.kwargs_known.update(kw_names)
        for trig, kwargs in (
            models.LatestKwargs.objects.using(db)
            .filter(session_id=session_id, trigger__in=list(kw_names))
            .values_list("trigger", "kwargs")
        ):
            snap.latest_kwargs[trig] = kwargs
    return snap


def read_all(db: str, session_id: int | None, meta: dict[str, Any] | None) -> Snapshot:
    models = _models()
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
    for name, record, lease_left in (
        models.SessionInstance.objects.using(db)
        .filter(session_id=session_id)
        .annotate(lease_left=_lease_left())
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


def write_changes(db: str, sid: int | None, changes: Changes) -> None:
    models = _models()
    task_rows = set(changes.configs) | set(changes.counters)
    if task_rows:
        rows = [
            models.SessionTask(
                session_id=sid,
                name=name,
                config=(changes.configs[name].to_directives() if name in changes.configs else None),
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
    values: dict[str, Any] = {"version": F("version") + 1, "updated_at": Now()}
    if changes.meta is not None:
        values["meta"] = changes.meta
    session.update(**values)
