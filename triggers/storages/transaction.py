"""The unit of work behind every locked operation on a session.

A :class:`Transaction` holds the session lock, reads what the operation
asks for (its :class:`~triggers.storages.session_view.SessionView` half),
takes in what the engine changed, and turns the result into one
:class:`Changes` set that the storage backend writes in one step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..effects import Effects
from ..types import TaskConfig, TaskInstance, now_iso
from .changeset import partial_waiting, received_changes, whole_waiting
from .data import Changes, Snapshot, build_index
from .session_view import SessionView

if TYPE_CHECKING:
    from .base import BaseTriggerStorage


class Transaction(SessionView):
    """The unit of work of one locked operation (see the module docstring)."""

    def __init__(self, storage: BaseTriggerStorage, lock: Any) -> None:
        super().__init__(storage)
        self.lock = lock
        self._dirty: set[str] = set()
        self._handed_out: set[str] = set()
        self.changes = Changes()
        self.after_commit: list[Callable[[], None]] = []
        self.dispatch_failures: dict[str, BaseException] = {}
        #: Set once the manager checked that no part of the session vanished.
        self.parts_checked = False
        #: When the engine made this operation's changes (``updated`` then).
        self.changed_at: str | None = None

    # -- changes -------------------------------------------------------------
    def new_instance(self, config: TaskConfig, **attrs: Any) -> TaskInstance:
        number = self.counters.get(config.name, 0)
        self.counters[config.name] = number + 1
        self.changes.counters[config.name] = number + 1
        when = now_iso()
        inst = TaskInstance(f"{config.name}#{number}", config, **attrs)
        inst.metadata.setdefault("timestamps", {}).update(created=when)
        inst.set_status(inst.status, when)
        self.instances[inst.name] = inst
        self._membership[inst.name] = set()
        self._known_instances.add(inst.name)
        self._dirty.add(inst.name)
        return inst

    def adopt(self, inst: TaskInstance) -> None:
        """Take in an instance the engine created (numbered from the counters)."""
        task, following = inst.config.name, inst.number + 1
        self.counters[task] = following
        self.changes.counters[task] = following
        self.instances[inst.name] = inst
        self._membership[inst.name] = set()
        self._known_instances.add(inst.name)
        self._dirty.add(inst.name)

    def apply(self, effects: Effects) -> Effects:
        """Take in what an engine operation changed, to write at commit. An
        instance that became ready is read whole first (it is dispatched
        and returned to the caller with every kwargs it received)."""
        if effects.when is not None:
            self.changed_at = effects.when
        if effects.ready:
            partial = [inst.name for inst in effects.ready if inst.partial]
            if partial:
                self.fetch(instances=partial)
        for inst in effects.created:
            self.adopt(inst)
        for inst in effects.changed:
            self.save(inst)
        instances = self.instances
        for name, names in effects.unwaited.items():
            if name in instances and instances[name].partial:
                self._unwaited.setdefault(name, set()).update(names)
        for trigger, kwargs in effects.latest_kwargs.items():
            self.set_latest_kwargs(trigger, kwargs)
        for name, (token, ms) in effects.leases_set.items():
            self.set_lease(name, token, ms)
        for name in effects.leases_dropped:
            self.drop_lease(name)
        if effects.timers_add:
            self.add_timers(effects.timers_add)
        return effects

    def add_timers(self, timers: dict[str, dict[str, Any]]) -> None:
        """Store ``timers`` (id -> timer) with this commit. Their due-index
        entries are written first: a process dying before the commit leaves
        entries that point at nothing (the next sweep drops them), never a
        stored timer that no sweep would find."""
        from .due_index import write_ahead

        write_ahead(self.storage, timers)
        self.changes.timers_add.update(timers)

    def save(self, inst: TaskInstance) -> None:
        """Mark an instance from this transaction as changed."""
        if self.instances.get(inst.name) is not inst:
            raise RuntimeError(f"{inst.name} does not belong to this transaction")
        self._dirty.add(inst.name)

    def hand_out(self, names: Iterable[str]) -> None:
        """Note instances the storage API gave to the caller, who may edit them."""
        self._handed_out.update(names)

    def save_edited(self) -> None:
        """``storage.save()`` inside ``acquire_lock()``: write every instance
        the block was given (it may have edited any of them in place)."""
        self._dirty.update(n for n in self._handed_out if n in self.instances)

    def as_snapshot(self) -> Snapshot:
        """What this (fully loaded) transaction would leave in the session."""
        return Snapshot(
            meta=self.meta,
            index=build_index(self.configs),
            configs=dict(self.configs),
            counters=dict(self.counters),
            records={n: i.to_record() for n, i in self.instances.items()},
            latest_kwargs=dict(self.latest_kwargs),
            kwargs_known=set(self.latest_kwargs),
            leases=dict(self.leases),
            everything=True,
        )

    def set_latest_kwargs(self, trigger: str, kwargs: Any) -> None:
        self.latest_kwargs[trigger] = kwargs
        self._kwargs_known.add(trigger)
        self.changes.latest_kwargs[trigger] = kwargs

    def set_configs(self, configs: dict[str, TaskConfig]) -> None:
        """Replace/add task configs; needs a full load (re-indexes instances)."""
        if not self.everything:
            raise RuntimeError("set_configs needs fetch(everything=True)")
        self.configs.update(configs)
        self.changes.configs.update(configs)
        self.index = build_index(self.configs)
        self.changes.index = self.index
        for inst in self.instances.values():
            if inst.config.name in configs:
                inst.config = configs[inst.config.name]
                self._dirty.add(inst.name)

    def set_lease(self, name: str, token: str, ms: int) -> None:
        self.changes.leases_set[name] = (token, ms)
        self.changes.leases_drop.discard(name)

    def drop_lease(self, name: str) -> None:
        self.changes.leases_drop.add(name)
        self.changes.leases_set.pop(name, None)

    def touch_meta(self, **values: Any) -> None:
        meta = dict(self.meta or {})
        if "created" not in meta:
            meta["created"] = now_iso()
        meta.update(values)
        self.meta = meta
        self.changes.meta = meta

    def build_changes(self) -> Changes:
        ch = self.changes
        for name in sorted(self._dirty):
            inst = self.instances[name]
            ch.instances[name] = inst
            self._received_changes(inst, ch)
            if inst.partial:
                self._partial_waiting(inst, ch)
            else:
                self._whole_waiting(inst, ch)
        if ch:
            # What the session holds from now on, so a later operation can
            # tell a part that vanished from one that never existed.
            meta = self.meta or {}
            flags: dict[str, bool] = {}
            if ch.latest_kwargs and not meta.get("fired"):
                flags["fired"] = True
            if ch.counters and not meta.get("has_instances"):
                flags["has_instances"] = True
            if ch.meta is None or flags:
                self.touch_meta(updated=self.changed_at or now_iso(), **flags)
        return ch

    def _received_changes(self, inst: TaskInstance, ch: Changes) -> None:
        received_changes(inst, self._records.get(inst.name), ch)

    def _partial_waiting(self, inst: TaskInstance, ch: Changes) -> None:
        record = self._records.get(inst.name) or {}
        partial_waiting(inst, record, self._unwaited.get(inst.name, set()), ch)

    def _whole_waiting(self, inst: TaskInstance, ch: Changes) -> None:
        name = inst.name
        old = self._membership.get(name)
        if old is None:
            old = set()
        if self.everything and name in self._records:
            # Configs may have changed: recompute the old membership from
            # the stored record under the old task's triggers too.
            task = inst.config.name
            stale = {t for (k, t), names in self._waiting.items() if k == task and name in names}
            old = old | stale
        whole_waiting(inst, old, self.everything, ch)


# The seam helpers and ``run_atomically`` live in operations.py; imported
# from here too, as they always were.
from .operations import (  # noqa: E402
    LOCK_LOST_RETRIES,
    checked_parts,
    current_transaction,
    existing_parts,
    forget_seen_state,
    has_seen_state,
    leases_left,
    renew_lease,
    run_atomically,
)

__all__ = [
    "LOCK_LOST_RETRIES",
    "Transaction",
    "checked_parts",
    "current_transaction",
    "existing_parts",
    "forget_seen_state",
    "has_seen_state",
    "leases_left",
    "renew_lease",
    "run_atomically",
]
