"""The session operations behind ``fire(..., delay=, at=, idempotency_key=)``
and ``cancel_timers()`` (SPEC §14); the manager calls them, and
:mod:`triggers.timers` (the sweeper) applies the timers they set.

Each one is one locked transaction on the session, like every manager
operation: an idempotency key is checked in the fetch under the session
lock and recorded in the same commit as the fire, and a timer is stored in
the same commit as the key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import conf, engine
from .integrity import check_before_fire
from .registry import trigger_managers
from .schedule import check_idempotency_key, due_time, new_timer_id, timer_record
from .storages.data import max_idempotency_keys
from .validation import check_name

if TYPE_CHECKING:
    from .manager import TriggerManager
    from .storages.transaction import Transaction
    from .types import TaskInstance

__all__ = ["cancel_timers", "fire_with_options", "key_seen", "record_key"]


def key_seen(txn: Transaction, key: str, trigger: str) -> bool:
    """Whether the session holds ``key`` unexpired, read with what a fire of
    ``trigger`` loads anyway (one round trip, under the session lock)."""
    txn.fetch(engine.load_for_fire(trigger).triggers, idempotency_key=key)
    return txn.keys_seen[key]


def record_key(txn: Transaction, key: str) -> None:
    """Record ``key`` in this transaction's commit, for
    ``TRIGGERS['IDEMPOTENCY_WINDOW']`` seconds (a bad
    ``IDEMPOTENCY_MAX_KEYS`` raises here, before anything is written)."""
    max_idempotency_keys()
    txn.changes.idempotency = (key, time.time() + float(conf.get("IDEMPOTENCY_WINDOW")))


def fire_with_options(
    manager: TriggerManager,
    trigger: str,
    kwargs: dict[str, Any],
    *,
    delay: Any = None,
    at: Any = None,
    idempotency_key: Any = None,
    manager_key: str | None = None,
) -> list[TaskInstance]:
    """``manager.fire`` with SPEC §14's options (``trigger`` and ``kwargs``
    already checked). Bad values raise ``TypeError``/``ValueError`` before
    anything is stored."""
    due = due_time(trigger, delay, at)
    key = check_idempotency_key(trigger, idempotency_key)
    if due is None:

        def fire_now(txn: Transaction) -> list[TaskInstance]:
            if key is not None:
                if key_seen(txn, key, trigger):
                    return []
                record_key(txn, key)
            return manager.fire_in(txn, trigger, kwargs)

        return manager.atomic(fire_now)

    storage = manager.storage
    timer_id = new_timer_id()
    timer = timer_record(trigger, due, kwargs, manager=_sweepable(manager, manager_key))

    def store(txn: Transaction) -> None:
        if key is not None and key_seen(txn, key, trigger):
            return
        # A fire that would be refused now (unconfigured session with
        # ON_UNCONFIGURED='raise', lost state) is refused at once.
        txn.load(engine.load_for_fire(trigger))
        check_before_fire(storage, txn, trigger)
        if key is not None:
            record_key(txn, key)
        # The due index first (Transaction.add_timers), under the session
        # lock: a sweeper that finds the entry waits for this commit before
        # it reads the session, and a process dying before the commit leaves
        # an entry the sweeper drops, never a timer no sweeper would find.
        txn.add_timers({timer_id: timer})

    manager.atomic(store)
    return []


def _sweepable(manager: TriggerManager, key: str | None) -> str | None:
    """The manager key a sweeper in another process can rebuild: ``key``,
    or for a class it cannot import (defined in a function, in ``__main__``)
    its nearest registered ancestor (``None``: ``TRIGGERS['MANAGER']``)."""
    cls = type(manager)
    if key is None or trigger_managers.rebuildable(cls):
        return key
    fallbacks = trigger_managers.fallbacks_for(cls)
    return fallbacks[0] if fallbacks else None


def cancel_timers(manager: TriggerManager, trigger: Any) -> int:
    """Remove the session's pending timers of ``trigger``; how many there were."""
    name = check_name(trigger, "trigger name")

    def cancel(txn: Transaction) -> int:
        txn.fetch(timers=True)
        pending: Mapping[str, Mapping[str, Any]] = txn.timers or {}
        found = {tid for tid, timer in pending.items() if timer.get("trigger") == name}
        txn.changes.timers_remove.update(found)
        return len(found)

    return manager.atomic(cancel)
