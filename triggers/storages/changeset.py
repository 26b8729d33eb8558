"""What a transaction writes for the instances it changed, beside their
records: the kwargs they received (for a backend that keeps them apart)
and the waiting-index entries to add and remove. Plain functions on
loaded data, called by :meth:`Transaction.build_changes
<triggers.storages.transaction.Transaction.build_changes>`.
"""

from __future__ import annotations

from typing import Any

from ..types import TaskInstance
from .data import UNLESS, Changes

__all__ = ["partial_waiting", "received_changes", "whole_waiting"]


def received_changes(inst: TaskInstance, record: dict[str, Any] | None, ch: Changes) -> None:
    """What ``inst`` received that its stored entries lack: one entry per
    trigger given to it in this operation, all of them for a new instance or
    one whose stored ``record`` still held them (an older release's)."""
    new = dict(inst.kwargs)
    if inst.abandon_state:
        new.update({UNLESS + t: v for t, v in inst.abandon_state.items()})
    if inst.partial or record is None or "progress" not in record:
        if new:
            ch.received[inst.name] = new
        return
    old = {
        **(record.get("kwargs") or {}),
        **{UNLESS + t: v for t, v in (record.get("abandon_state") or {}).items()},
    }
    written = {k: v for k, v in new.items() if k not in old or old[k] != v}
    dropped = set(old) - set(new)
    if written:
        ch.received[inst.name] = written
    if dropped:
        ch.received_drop[inst.name] = dropped


def partial_waiting(
    inst: TaskInstance, record: dict[str, Any], unwaited: set[str], ch: Changes
) -> None:
    """Waiting-index changes of an instance read without what it received:
    the names it stopped waiting on (``unwaited``), and every name of its
    task once it is no longer unstarted (once in its life)."""
    task, name = inst.config.name, inst.name
    if inst.status != TaskInstance.STATUS_UNSTARTED:
        if record.get("status") == TaskInstance.STATUS_UNSTARTED:
            for trig in inst.config.triggers:
                ch.waiting_remove.add((task, trig, name))
    for trig in unwaited:
        ch.waiting_remove.add((task, trig, name))


def whole_waiting(inst: TaskInstance, old: set[str], everything: bool, ch: Changes) -> None:
    """Waiting-index changes of an instance read whole: from the names the
    index listed it under (``old``) to what it waits on now."""
    task, name = inst.config.name, inst.name
    new = inst.waiting_on()
    for trig in old - new:
        ch.waiting_remove.add((task, trig, name))
    for trig in new - old:
        ch.waiting_add.add((task, trig, name))
    # Re-adding members that exist is harmless and heals an index written
    # before a config change.
    if everything:
        for trig in new:
            ch.waiting_add.add((task, trig, name))
