"""The unit of work behind every locked operation on a session.

A :class:`Transaction` holds the session lock, loads only what an operation
asks for (the tasks that mention a trigger, the instances waiting on it, a
named instance), keeps every instance it touched in an identity map, and
turns the result into one :class:`Changes` set that the storage backend
writes in one step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..engine import Effects, Load
from ..exceptions import (
    UnknownInstanceError,
)
from ..types import TaskConfig, TaskInstance, now_iso
from .changeset import partial_waiting, received_changes, whole_waiting
from .data import (
    Changes,
    FetchRequest,
    Snapshot,
    WaitKey,
    build_index,
    instance_sort_key,
)

if TYPE_CHECKING:
    from .base import BaseTriggerStorage


class Transaction:
    def __init__(self, storage: BaseTriggerStorage, lock: Any) -> None:
        self.storage = storage
        self.lock = lock
        self.meta: dict[str, Any] | None = None
        self.meta_loaded = False
        self.index: dict[str, list[str]] = {}
        self.configs: dict[str, TaskConfig] = {}
        self.counters: dict[str, int] = {}
        self.latest_kwargs: dict[str, Any] = {}
        self._kwargs_known: set[str] = set()
        self._waiting: dict[WaitKey, set[str]] = {}
        self.instances: dict[str, TaskInstance] = {}
        #: What the waiting index listed a whole instance under when loaded.
        self._membership: dict[str, set[str]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        #: Partial instances: trigger names they stopped waiting on here.
        self._unwaited: dict[str, set[str]] = {}
        self.leases: dict[str, int] = {}
        self.everything = False
        self._known_tasks: set[str] = set()
        self._known_instances: set[str] = set()
        self._known_triggers: set[str] = set()
        self._dirty: set[str] = set()
        self._handed_out: set[str] = set()
        self.changes = Changes()
        self.after_commit: list[Callable[[], None]] = []
        self.dispatch_failures: dict[str, BaseException] = {}
        #: Set once the manager checked that no part of the session vanished.
        self.parts_checked = False
        #: The session's pending timers, once read (``fetch(timers=True)``
        #: or a full load): timer id -> timer.
        self.timers: dict[str, dict[str, Any]] | None = None
        #: Idempotency key -> whether the session holds it unexpired
        #: (``fetch(idempotency_key=...)``).
        self.keys_seen: dict[str, bool] = {}

    # -- loading -------------------------------------------------------------
    def fetch(
        self,
        triggers: Iterable[str] = (),
        instances: Iterable[str] = (),
        tasks: Iterable[str] = (),
        everything: bool = False,
        kwargs: Iterable[str] = (),
        *,
        timers: bool = False,
        idempotency_key: str | None = None,
    ) -> None:
        """Load what is not loaded yet (one backend round trip at most);
        ``kwargs``: triggers whose latest kwargs to read; ``timers``: the
        pending timers (:attr:`timers`); ``idempotency_key``: whether the
        session holds that key (:attr:`keys_seen`)."""
        timers = timers and self.timers is None
        key = idempotency_key if idempotency_key not in self.keys_seen else None
        if self.everything:
            if timers or key is not None:
                snap = self.storage.fetch(FetchRequest(idempotency_key=key, timers=timers))
                self._absorb_extras(snap, key, timers)
            return
        kwargs = [t for t in dict.fromkeys(kwargs) if t not in self._kwargs_known]
        triggers = [t for t in dict.fromkeys(triggers) if t not in self._known_triggers]
        instances = [
            i
            for i in dict.fromkeys(instances)
            if i not in self._known_instances or self._is_partial(i)
        ]
        tasks = [t for t in dict.fromkeys(tasks) if t not in self._known_tasks]
        # An instance's config comes with it.
        tasks += [
            n.rpartition("#")[0] for n in instances if n.rpartition("#")[0] not in self._known_tasks
        ]
        tasks = list(dict.fromkeys(tasks))
        extras = timers or key is not None
        if not (triggers or instances or tasks or everything or kwargs or extras):
            if self.meta_loaded:
                return
        snap = self.storage.fetch(
            FetchRequest(
                tuple(triggers),
                tuple(instances),
                tuple(tasks),
                everything,
                kwargs=tuple(kwargs),
                idempotency_key=key,
                timers=timers,
            )
        )
        self._absorb(snap, triggers, instances, tasks)
        if extras or snap.everything:
            self._absorb_extras(snap, key, timers)

    def _absorb_extras(self, snap: Snapshot, key: str | None, timers: bool) -> None:
        if self.timers is None and (timers or snap.everything):  # a full load has them
            self.timers = dict(snap.timers)
        if key is not None:
            self.keys_seen[key] = snap.idempotency_seen

    def load(self, load: Load) -> None:
        """Load what an engine operation declared it needs."""
        self.fetch(load.triggers, load.instances, everything=load.everything)

    def _absorb(
        self, snap: Snapshot, triggers: list[str], instances: list[str], tasks: list[str]
    ) -> None:
        if not self.meta_loaded:
            self.meta = snap.meta
            self.meta_loaded = True
        for name, cfg in snap.configs.items():
            self.configs.setdefault(name, cfg)
        self._known_tasks.update(tasks)
        self._known_tasks.update(snap.configs)
        for name, value in snap.counters.items():
            self.counters.setdefault(name, value)
        for trig, task_names in snap.index.items():
            self.index.setdefault(trig, list(task_names))
            self._known_tasks.update(task_names)
        self._known_triggers.update(triggers)
        for key, names in snap.waiting.items():
            self._waiting.setdefault(key, set()).update(names)
        for name, record in snap.records.items():
            config = self.configs.get(record["task"])
            if config is None:
                continue
            if name in self.instances:
                self._complete(self.instances[name], record)
                continue
            inst = TaskInstance.from_record(name, record, config)
            self.instances[name] = inst
            if not inst.partial:
                self._membership[name] = inst.waiting_on()
            self._records[name] = record
        self._known_instances.update(instances)
        self._known_instances.update(snap.records)
        for trig in snap.kwargs_known:
            if trig not in self._kwargs_known:
                self._kwargs_known.add(trig)
                if trig in snap.latest_kwargs:
                    self.latest_kwargs[trig] = snap.latest_kwargs[trig]
        for name, ms in snap.leases.items():
            self.leases.setdefault(name, ms)
        if snap.everything:
            self.everything = True
            self.index = build_index(self.configs)
            self._kwargs_known = set(self.latest_kwargs) | {"*"}

    def _is_partial(self, name: str) -> bool:
        inst = self.instances.get(name)
        return inst is not None and inst.partial

    def _complete(self, inst: TaskInstance, record: dict[str, Any]) -> None:
        """A later read brought the whole record of an instance first read
        without what it received: merge what this operation gave it."""
        if not inst.partial or "kwargs" not in record:
            return
        stored = TaskInstance.from_record(inst.name, record, inst.config)
        self._membership[inst.name] = stored.waiting_on()
        self._records[inst.name] = record
        inst.kwargs = {**stored.kwargs, **inst.kwargs}
        inst.abandon_state = {**stored.abandon_state, **inst.abandon_state}
        inst.partial = False
        self._unwaited.pop(inst.name, None)

    # -- queries -------------------------------------------------------------
    def tasks_for(self, trigger: str) -> list[TaskConfig]:
        if self.everything:
            names = build_index(self.configs).get(trigger, [])
        else:
            names = self.index.get(trigger, [])
        return [self.configs[n] for n in sorted(names) if n in self.configs]

    def waiting(self, task: str, trigger: str) -> list[TaskInstance]:
        """Unstarted instances of ``task`` that have not received ``trigger``
        (a partial instance only if the index lists it under ``trigger``)."""
        listed = self._waiting.get((task, trigger), set())
        found = []
        for name, inst in self.instances.items():
            if inst.config.name != task or inst.status != TaskInstance.STATUS_UNSTARTED:
                continue
            if inst.partial:
                if name in listed and trigger not in self._unwaited.get(name, ()):
                    found.append(inst)
            elif trigger in inst.waiting_on():
                found.append(inst)
        return sorted(found, key=lambda i: instance_sort_key(i.name))

    def seed_kwargs(self, config: TaskConfig) -> dict[str, Any]:
        """Latest kwargs of the triggers ``config`` mentions that fired
        (read now if the fetch did not bring them)."""
        known = self._kwargs_known
        if not self.everything and any(t not in known for t in config.triggers):
            self.fetch(kwargs=sorted(config.triggers))
        latest = self.latest_kwargs
        return {t: latest[t] for t in config.triggers if t in latest}

    def waiting_names(self, task: str, trigger: str) -> set[str]:
        """Names the waiting index lists under ``(task, trigger)``."""
        return set(self._waiting.get((task, trigger), ()))

    def get_instance(self, name: str) -> TaskInstance:
        if name not in self.instances:
            self.fetch(instances=[name])
        try:
            return self.instances[name]
        except KeyError:
            raise UnknownInstanceError(name, self.storage.uid) from None

    def has_instances(self, task: str) -> bool:
        return self.counters.get(task, 0) > 0

    def fired(self, trigger: str) -> bool:
        return trigger in self.latest_kwargs

    def instances_of(self, task: str) -> list[TaskInstance]:
        """Every instance of a task (needs a full load)."""
        self.fetch(everything=True)
        return sorted(
            (i for i in self.instances.values() if i.config.name == task),
            key=lambda i: instance_sort_key(i.name),
        )

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
        self.counters[inst.config.name] = inst.number + 1
        self.changes.counters[inst.config.name] = inst.number + 1
        self.instances[inst.name] = inst
        self._membership[inst.name] = set()
        self._known_instances.add(inst.name)
        self._dirty.add(inst.name)

    def apply(self, effects: Effects) -> Effects:
        """Take in what an engine operation changed, to write at commit. An
        instance that became ready is read whole first (it is dispatched
        and returned to the caller with every kwargs it received)."""
        partial = [inst.name for inst in effects.ready if inst.partial]
        if partial:
            self.fetch(instances=partial)
        for inst in effects.created:
            self.adopt(inst)
        for inst in effects.changed:
            self.save(inst)
        for name, names in effects.unwaited.items():
            if name in self.instances and self.instances[name].partial:
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
        meta.setdefault("created", now_iso())
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
            flags = {
                flag: True
                for flag, written in (("fired", ch.latest_kwargs), ("has_instances", ch.counters))
                if written and not meta.get(flag)
            }
            if ch.meta is None or flags:
                self.touch_meta(updated=now_iso(), **flags)
        return ch

    def _received_changes(self, inst: TaskInstance, ch: Changes) -> None:
        received_changes(inst, self._records.get(inst.name), ch)

    def _partial_waiting(self, inst: TaskInstance, ch: Changes) -> None:
        record = self._records.get(inst.name) or {}
        partial_waiting(inst, record, self._unwaited.get(inst.name, set()), ch)

    def _whole_waiting(self, inst: TaskInstance, ch: Changes) -> None:
        name = inst.name
        old = self._membership.get(name, set())
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
