"""What an operation has read of a session: the loading half of a
:class:`~triggers.storages.transaction.Transaction`.

A :class:`SessionView` loads only what it is asked for (the tasks that
mention a trigger, the instances waiting on it, a named instance), at most
one backend round trip a call, merges each :class:`Snapshot` into an
identity map (one :class:`TaskInstance` per name, completed when a later
read brings the whole record of one first read ``partial``), and answers
the engine's queries from it. The transaction adds what the operation
changes and writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import UnknownInstanceError
from ..types import TaskConfig, TaskInstance
from .data import FetchRequest, Snapshot, WaitKey, build_index, instance_sort_key

if TYPE_CHECKING:
    from ..effects import Load
    from .base import BaseTriggerStorage

__all__ = ["SessionView"]


class SessionView:
    def __init__(self, storage: BaseTriggerStorage) -> None:
        self.storage = storage
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
        # (Each filter only when there is something to filter: a fire asks
        # for one trigger and nothing else.)
        if kwargs:
            kwargs = [t for t in dict.fromkeys(kwargs) if t not in self._kwargs_known]
        if triggers:
            known, wanted = self._known_triggers, []
            for t in dict.fromkeys(triggers):
                if t not in known:
                    wanted.append(t)
            triggers = wanted
        if instances:
            instances = [
                i
                for i in dict.fromkeys(instances)
                if i not in self._known_instances or self._is_partial(i)
            ]
        if tasks or instances:
            tasks = [t for t in dict.fromkeys(tasks) if t not in self._known_tasks]
            # An instance's config comes with it.
            tasks += [
                n.rpartition("#")[0]
                for n in instances
                if n.rpartition("#")[0] not in self._known_tasks
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
        self,
        snap: Snapshot,
        triggers: Iterable[str],
        instances: Iterable[str],
        tasks: Iterable[str],
    ) -> None:
        if not self.meta_loaded:
            self.meta = snap.meta
            self.meta_loaded = True
        # What is already loaded wins over what a later fetch brings; into
        # an empty map (an operation's first fetch) the fetch goes whole.
        configs, counters, known_tasks = self.configs, self.counters, self._known_tasks
        if configs:
            for name, cfg in snap.configs.items():
                configs.setdefault(name, cfg)
        else:
            configs.update(snap.configs)
        known_tasks.update(tasks)
        known_tasks.update(snap.configs)
        if counters:
            for name, value in snap.counters.items():
                counters.setdefault(name, value)
        else:
            counters.update(snap.counters)
        index = self.index
        for trig, task_names in snap.index.items():
            index.setdefault(trig, list(task_names))
            known_tasks.update(task_names)
        self._known_triggers.update(triggers)
        if snap.waiting:
            waiting = self._waiting
            for key, names in snap.waiting.items():
                waiting.setdefault(key, set()).update(names)
        loaded = self.instances
        for name, record in snap.records.items():
            config = configs.get(record["task"])
            if config is None:
                continue
            if name in loaded:
                self._complete(loaded[name], record)
                continue
            inst = TaskInstance.from_record(name, record, config)
            loaded[name] = inst
            if not inst.partial:
                self._membership[name] = inst.waiting_on()
            self._records[name] = record
        # The names asked for count as read even when the session has no such
        # instance (a second ask needs no round trip), and so do those read.
        self._known_instances.update(instances)
        self._known_instances.update(snap.records)
        kwargs_known, fetched = self._kwargs_known, snap.latest_kwargs
        for trig in snap.kwargs_known:
            if trig not in kwargs_known:
                kwargs_known.add(trig)
                if trig in fetched:
                    self.latest_kwargs[trig] = fetched[trig]
        if snap.leases:
            leases = self.leases
            for name, ms in snap.leases.items():
                leases.setdefault(name, ms)
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
        configs = self.configs
        found = []
        for name in sorted(names):
            if name in configs:
                found.append(configs[name])
        return found

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
        triggers = config.triggers
        if not self.everything and not self._kwargs_known.issuperset(triggers):
            self.fetch(kwargs=sorted(triggers))
        latest = self.latest_kwargs
        seeds = {}
        for t in triggers:
            if t in latest:
                seeds[t] = latest[t]
        return seeds

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
