"""The session API every storage offers (``tasks``, ``instances``,
``storage[name]``, ``create_instance``...), built on the storage's
``fetch`` and ``transaction()``: a mixin of
:class:`~triggers.storages.base.BaseTriggerStorage`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import UnknownInstanceError
from ..types import TaskConfig, TaskInstance
from ..validation import MAX_NAME_LENGTH, check_name
from .data import FetchRequest, Snapshot, instance_sort_key

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .transaction import Transaction

__all__ = ["MAX_INSTANCE_NAME_LENGTH", "SessionAPI"]

#: A task name, "#" and a 20-digit instance number.
MAX_INSTANCE_NAME_LENGTH = MAX_NAME_LENGTH + 21


class SessionAPI:
    """Reads that are always current (outside a block every read goes to
    the backend) and the instance-level writes."""

    uid: str

    if TYPE_CHECKING:

        def fetch(self, request: FetchRequest) -> Snapshot: ...
        def transaction(self) -> AbstractContextManager[Transaction]: ...
        @property
        def current_transaction(self) -> Transaction | None: ...
        def _bound(self) -> Transaction | None: ...

    # -- session-level API (always current) ---------------------------------
    def _load_all(self) -> Snapshot:
        return self.fetch(FetchRequest(everything=True))

    @property
    def tasks(self) -> dict[str, TaskConfig]:
        txn = self._bound()
        configs = txn.configs if txn is not None else self._load_all().configs
        return dict(sorted(configs.items()))

    @property
    def instances(self) -> dict[str, TaskInstance]:
        txn = self._bound()
        if txn is not None:
            txn.hand_out(txn.instances)
            return {n: txn.instances[n] for n in sorted(txn.instances, key=instance_sort_key)}
        return self._instances_in(self._load_all())

    @staticmethod
    def _instances_in(snap: Snapshot) -> dict[str, TaskInstance]:
        result = {}
        for name in sorted(snap.records, key=instance_sort_key):
            record = snap.records[name]
            cfg = snap.configs.get(record["task"])
            if cfg is not None:
                result[name] = TaskInstance.from_record(name, record, cfg)
        return result

    @property
    def timers(self) -> list[dict[str, Any]]:
        """Pending timers (delayed fires, deadlines), earliest first: plain
        dicts with ``id``, ``trigger``, ``due`` (ISO-8601), ``kwargs`` and,
        for a deadline, ``instance`` (see :mod:`triggers.timers`)."""
        from ..schedule import timer_list

        return timer_list(self.fetch(FetchRequest(timers=True)).timers)

    @property
    def metadata(self) -> dict[str, Any]:
        txn = self._bound()
        source: Any = txn if txn is not None else self._load_all()
        meta = dict(source.meta or {})
        meta["latest_kwargs"] = dict(source.latest_kwargs)
        meta["counters"] = dict(source.counters)
        return meta

    @property
    def latest_kwargs(self) -> dict[str, Any]:
        txn = self._bound()
        return dict(txn.latest_kwargs if txn is not None else self._load_all().latest_kwargs)

    def __getitem__(self, instance_name: str) -> TaskInstance:
        check_name(instance_name, "task instance name", max_length=MAX_INSTANCE_NAME_LENGTH)
        txn = self.current_transaction
        if txn is not None:
            inst = txn.get_instance(instance_name)
            txn.hand_out([instance_name])
            return inst
        snap = self.fetch(
            FetchRequest(instances=(instance_name,), tasks=(instance_name.rpartition("#")[0],))
        )
        record = snap.records.get(instance_name)
        if record is None or record.get("task") not in snap.configs:
            raise UnknownInstanceError(instance_name, self.uid)
        return TaskInstance.from_record(instance_name, record, snap.configs[record["task"]])

    def __contains__(self, instance_name: object) -> bool:
        if not isinstance(instance_name, str):
            return False
        try:
            self[instance_name]
        except (UnknownInstanceError, ValueError):
            return False
        return True

    def __iter__(self) -> Iterator[TaskInstance]:
        """The session's :class:`TaskInstance` objects, in task then creation
        order (use ``storage.instances`` for a name -> instance mapping)."""
        return iter(list(self.instances.values()))

    def __len__(self) -> int:
        return len(self.instances)

    def instances_of_task(self, task_config: TaskConfig | str) -> list[TaskInstance]:
        """Every instance of a task (a ``TaskConfig`` or a task name)."""
        name = task_config.name if isinstance(task_config, TaskConfig) else task_config
        return [i for i in self.instances.values() if i.config.name == name]

    def get_unresolved_tasks(self) -> list[TaskConfig]:
        """Tasks with no instance yet, or with an unresolved one."""
        # One snapshot, so tasks and instances are from the same moment.
        txn = self._bound()
        if txn is not None:
            configs, instances = txn.configs, list(txn.instances.values())
            txn.hand_out(txn.instances)
        else:
            snap = self._load_all()
            configs, instances = snap.configs, list(self._instances_in(snap).values())
        with_instances = {i.config.name for i in instances}
        unresolved = {i.config.name for i in instances if not i.is_resolved}
        return [
            cfg
            for name, cfg in sorted(configs.items())
            if name not in with_instances or name in unresolved
        ]

    def get_unresolved_instances(self) -> list[TaskInstance]:
        return [i for i in self.instances.values() if not i.is_resolved]

    def get_instances_with_unresolved_logs(self) -> list[TaskInstance]:
        return [i for i in self.instances.values() if not i.logs_resolved]

    def create_instance(self, task_config: TaskConfig | str, **kwargs: Any) -> TaskInstance:
        """Create and store a new instance of a task (status ``unstarted``
        unless given)."""
        with self.transaction() as txn:
            name = task_config.name if isinstance(task_config, TaskConfig) else task_config
            txn.fetch(tasks=[name])
            if name not in txn.configs:
                raise KeyError(f"no task named {name!r} in session {self.uid!r}")
            inst = txn.new_instance(txn.configs[name], **kwargs)
            txn.save(inst)
            return inst

    def clone_instance(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Store a copy of an instance as a new instance of the same task,
        one level deeper (``metadata['parent']``/``['depth']``)."""
        with self.transaction() as txn:
            if isinstance(task_instance, TaskInstance):
                name = task_instance.name
            else:
                name = check_name(
                    task_instance, "task instance name", max_length=MAX_INSTANCE_NAME_LENGTH
                )
            source = txn.get_instance(name)
            clone = txn.new_instance(
                source.config,
                kwargs=copy.deepcopy(source.kwargs),
                abandon_state=copy.deepcopy(source.abandon_state),
            )
            clone.metadata["parent"] = source.name
            clone.metadata["depth"] = int(source.metadata.get("depth", 0)) + 1
            txn.save(clone)
            return clone

    def debug_repr(self) -> dict[str, Any]:
        """A plain, JSON-serialisable snapshot of the whole session."""
        txn = self._bound()
        snap = self._load_all() if txn is None else txn.as_snapshot()
        return {
            "uid": self.uid,
            "tasks": {n: c.to_directives() for n, c in sorted(snap.configs.items())},
            "instances": {
                n: copy.deepcopy(snap.records[n])
                for n in sorted(snap.records, key=instance_sort_key)
            },
            "metadata": copy.deepcopy(snap.meta or {}),
            "latest_kwargs": copy.deepcopy(snap.latest_kwargs),
        }
