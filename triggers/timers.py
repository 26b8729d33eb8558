"""Delayed fires and deadlines (SPEC §14): applying the timers that are due.

``manager.fire(name, kwargs, delay=..., at=...)`` stores a *timer* in the
session (``storage.timers``); a task's ``deadline`` directive sets one when
an instance of the task is created. :func:`fire_due_timers` applies every
timer that is due, across all sessions, through the normal fire path:

.. code-block:: python

    from triggers.timers import fire_due_timers

    fire_due_timers()            # how many timers it applied

Run it often: from Celery beat (the task ``triggers.fire_due_timers``) or
``manage.py triggers_timers --loop``. Any number of sweepers may run at
once. Each timer is applied exactly once: the fire's own locked commit
removes the timer from the session, and a timer the session no longer
holds is never applied, so a sweeper that crashes, or two that race, can
at worst do nothing twice. What a sweep costs grows with the timers that
are due, not with the number of sessions: it reads the due index
(:mod:`triggers.storages.due_index`), never the sessions themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from . import conf
from .exceptions import DispatchError
from .manager import TriggerManager
from .registry import trigger_managers
from .schedule import aware_utc, from_iso
from .storages import BaseTriggerStorage, storage_backends
from .storages.due_index import BATCH, DueEntry, DueIndex, after_commit, index_for
from .storages.transaction import Transaction
from .types import TaskInstance

__all__ = ["after_commit", "apply_timer", "fire_due_timers", "sweep_storage"]

logger = logging.getLogger("triggers.timers")

Outcome = Literal["applied", "dropped", "gone", "later"]


def _check_now(now: Any) -> datetime:
    return datetime.now(UTC) if now is None else aware_utc(now, "fire_due_timers(now=...)")


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
    return int(limit)


def sweep_storage() -> BaseTriggerStorage:
    """A storage for no particular session, built from ``TRIGGERS['STORAGE']``
    and ``TRIGGERS['STORAGE_OPTIONS']``: its due index is the one swept."""
    options = dict(conf.get("STORAGE_OPTIONS") or {})
    return storage_backends.get(conf.get("STORAGE"), "triggers-timers", **options)


def apply_timer(
    manager: TriggerManager,
    timer_id: str,
    now: datetime,
    hint: Mapping[str, Any] | None = None,
) -> Outcome:
    """Apply one pending timer of ``manager``'s session if it is due at
    ``now``, in one locked transaction that also removes it: ``'applied'``
    (fired), ``'dropped'`` (a deadline whose instance had started: removed
    without firing), ``'gone'`` (the session holds no such timer: applied
    or cancelled before) or ``'later'`` (not due yet). ``hint`` (the due
    index's locator: the timer's ``trigger`` and ``instance``) lets the
    first read bring what the fire needs too."""
    hint = hint or {}
    triggers = (hint["trigger"],) if hint.get("trigger") else ()
    instances = (hint["instance"],) if hint.get("instance") else ()

    def op(txn: Transaction) -> Outcome:
        txn.fetch(triggers, instances, timers=True)
        timer = (txn.timers or {}).get(timer_id)
        if timer is None:
            return "gone"
        if from_iso(timer["due"]) > now:
            return "later"
        txn.changes.timers_remove.add(timer_id)
        instance = timer.get("instance")
        if instance:
            txn.fetch(instances=[instance])
            inst = txn.instances.get(instance)
            if inst is None or inst.status != TaskInstance.STATUS_UNSTARTED:
                return "dropped"
        manager.fire_in(txn, timer["trigger"], dict(timer.get("kwargs") or {}))
        return "applied"

    return manager.atomic(op)


def _manager_for(entry: DueEntry, fallback: dict[str, Any]) -> TriggerManager:
    locator = entry.locator or fallback
    storage = storage_backends.get(
        locator.get("storage") or fallback["storage"], entry.uid, **(locator.get("options") or {})
    )
    key = locator.get("manager") or conf.get("MANAGER") or "default"
    return trigger_managers.get(key, storage)


def _apply_entry(index: DueIndex, entry: DueEntry, now: datetime, fallback: dict[str, Any]) -> int:
    try:
        manager = _manager_for(entry, fallback)
        outcome = apply_timer(manager, entry.timer_id, now, entry.locator)
    except DispatchError as exc:
        # Recorded and committed; only the hand-over to a runner failed
        # (resend_ready_instances() sends it again).
        logger.error("timer %s of session %r fired, but %s", entry.timer_id, entry.uid, exc)
        outcome = "applied"
    except Exception:
        # Left claimed: it comes back to a sweeper after CLAIM_SECONDS.
        logger.exception(
            "timer %s of session %r could not be applied; it will be tried again",
            entry.timer_id,
            entry.uid,
            extra={"triggers_session": entry.uid},
        )
        return 0
    if outcome == "later":
        timer = read_timer(manager, entry.timer_id)
        if timer is not None:
            index.add([entry._replace(due=from_iso(timer["due"]).timestamp())])
        return 0
    if outcome == "gone" and not _maybe_in_flight(entry):
        # Nothing was committed; an applied or dropped timer's entry went
        # with its commit (after_commit).
        index.remove([(entry.uid, entry.timer_id)])
    return 1 if outcome == "applied" else 0


def _maybe_in_flight(entry: DueEntry) -> bool:
    """Whether the fire that wrote ``entry`` may not have committed yet: the
    entry is written first, and a backend whose reads do not wait for the
    session lock (the document tier, across processes) can show the session
    without the timer until then. Such an entry stays claimed and comes back
    after ``CLAIM_SECONDS`` (the timer fires late, not never); an older one
    points at nothing and is dropped."""
    written = (entry.locator or {}).get("written")
    if not isinstance(written, int | float):
        return False
    grace = float(conf.get("LOCK_TIMEOUT")) + float(conf.get("LOCK_EXPIRE"))
    return time.time() - written < grace


def read_timer(manager: TriggerManager, timer_id: str) -> dict[str, Any] | None:
    """One pending timer of ``manager``'s session (``None`` if there is none)."""
    from .storages.data import FetchRequest

    timers = manager.storage.fetch(FetchRequest(timers=True)).timers
    found = timers.get(timer_id)
    return dict(found) if found is not None else None


def fire_due_timers(
    now: datetime | None = None,
    limit: int | None = None,
    *,
    storage: BaseTriggerStorage | None = None,
) -> int:
    """Apply every timer due at ``now`` (an aware datetime; default: the
    current time) across all sessions, at most ``limit`` of them; returns
    how many fired. Safe to run from any number of processes at once.

    The due index swept is that of ``storage`` (any storage object of the
    backend and options to sweep), by default the configured one
    (:func:`sweep_storage`). A timer that cannot be applied (e.g. its
    session is locked for longer than ``TRIGGERS['LOCK_TIMEOUT']``) is
    logged and tried again by a later sweep.
    """
    when = _check_now(now)
    remaining = _check_limit(limit)
    probe = storage if storage is not None else sweep_storage()
    index = index_for(probe)
    fallback = {
        "storage": storage_backends.key_for(type(probe)),
        "options": probe.get_init_kwargs(),
        "manager": None,
    }
    applied = 0
    while remaining is None or remaining > 0:
        want = BATCH if remaining is None else min(BATCH, remaining)
        batch = index.claim(when.timestamp(), want)
        for entry in batch:
            applied += _apply_entry(index, entry, when, fallback)
        if remaining is not None:
            remaining -= len(batch)
        if len(batch) < want:
            break
    if applied:
        logger.info("applied %d due timer(s)", applied)
    return applied
