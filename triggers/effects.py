"""What an engine operation reads and returns (see :mod:`triggers.engine`):
the :class:`Load` it needs fetched first, the :class:`SessionData` it reads
from, and the :class:`Effects` its caller writes in one commit. Plain
values, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .types import TaskConfig, TaskInstance

__all__ = [
    "LOAD_EVERYTHING",
    "Effects",
    "Load",
    "SessionData",
    "instance_sort_key",
    "load_for_finish",
    "load_for_fire",
    "load_for_instance",
    "task_of",
]


def task_of(instance_name: str) -> str:
    """The task an instance name (``<task>#<n>``) belongs to."""
    return instance_name.rpartition("#")[0]


def instance_sort_key(name: str) -> tuple[str, int]:
    task, _, number = name.rpartition("#")
    return task, int(number) if number.isdigit() else -1


# -- what an operation must load ------------------------------------------------


@dataclass(frozen=True, init=False)
class Load:
    """The part of a session an operation reads: the tasks that mention
    ``triggers`` with their waiting instances (read without what they
    received: :attr:`~TaskInstance.partial`), the named ``instances`` whole
    with their tasks, or everything. A new instance's seed kwargs are asked
    for through :meth:`SessionData.seed_kwargs` (a backend may read them
    with the fire's first read when it sees an instance will be created).

    (Its ``__init__`` is written out: every operation declares one, and the
    generated code of a frozen class sets each field through a call of
    ``object.__setattr__``; writing them into the instance's dictionary
    passes the same guard by, at a fraction of the cost.)"""

    triggers: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    everything: bool = False

    def __init__(
        self,
        triggers: tuple[str, ...] = (),
        instances: tuple[str, ...] = (),
        everything: bool = False,
    ) -> None:
        values = self.__dict__
        values["triggers"] = triggers
        values["instances"] = instances
        values["everything"] = everything


LOAD_EVERYTHING = Load(everything=True)


def load_for_fire(trigger: str) -> Load:
    """A fire (and a cascade) needs the trigger's tasks and waiting instances."""
    return Load(triggers=(trigger,))


def load_for_instance(name: str) -> Load:
    """Claiming, failing, replaying or skipping needs the instance itself."""
    return Load(instances=(name,))


def load_for_finish(name: str) -> Load:
    """A finish needs the instance and what its cascade applies to."""
    return Load(instances=(name,), triggers=(task_of(name),))


# -- loaded data and effects ------------------------------------------------------


class SessionData(Protocol):
    """What the rules read from a loaded session."""

    @property
    def counters(self) -> Mapping[str, int]:
        """Task name -> how many instances it has had."""
        ...

    def seed_kwargs(self, config: TaskConfig) -> Mapping[str, Any]:
        """Trigger name -> kwargs of its latest fire, for the triggers
        ``config`` mentions that fired (what a new instance starts with)."""
        ...

    def tasks_for(self, trigger: str) -> list[TaskConfig]:
        """Tasks whose ``after`` or ``unless`` mention ``trigger``, by name."""
        ...

    def waiting(self, task: str, trigger: str) -> list[TaskInstance]:
        """Unstarted instances of ``task`` still waiting on ``trigger``, by number."""
        ...


#: Marks a collection argument of :class:`Effects` that was not given (each
#: then starts empty).
_NEW: Any = object()


@dataclass(init=False)
class Effects:
    """What one rule changed; the caller writes it in one commit.

    (Its ``__init__`` is written out, as :class:`~triggers.storages.data.Snapshot`'s:
    every operation makes one, and a literal per empty collection costs less
    than the generated code's call of each field's factory.)"""

    created: list[TaskInstance] = field(default_factory=list)
    changed: list[TaskInstance] = field(default_factory=list)
    #: Instances that became ready, in the order they should be dispatched.
    ready: list[TaskInstance] = field(default_factory=list)
    abandoned: list[TaskInstance] = field(default_factory=list)
    latest_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Tasks that got their first instance: numbered #0 and seeded from the
    #: recorded kwargs, both wrong if those parts vanished, so the caller
    #: checks they did not before writing.
    first_of: list[str] = field(default_factory=list)
    leases_set: dict[str, tuple[str, int]] = field(default_factory=dict)
    leases_dropped: set[str] = field(default_factory=set)
    #: instance name -> trigger names it no longer waits on (received, or
    #: members of a group it has now satisfied).
    unwaited: dict[str, set[str]] = field(default_factory=dict)
    #: timer id -> timer to store with this commit: the deadlines of the
    #: instances created (the ``deadline`` directive, SPEC §14).
    timers_add: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``(task, trigger, reason)``: ``if`` conditions that could not be
    #: evaluated on a fire (they counted as false); the caller logs them.
    condition_errors: list[tuple[str, str, str]] = field(default_factory=list)
    #: When the rule ran (ISO-8601 UTC), the time of the changes it made.
    when: str | None = None

    def __init__(
        self,
        created: list[TaskInstance] = _NEW,
        changed: list[TaskInstance] = _NEW,
        ready: list[TaskInstance] = _NEW,
        abandoned: list[TaskInstance] = _NEW,
        latest_kwargs: dict[str, Any] = _NEW,
        first_of: list[str] = _NEW,
        leases_set: dict[str, tuple[str, int]] = _NEW,
        leases_dropped: set[str] = _NEW,
        unwaited: dict[str, set[str]] = _NEW,
        timers_add: dict[str, dict[str, Any]] = _NEW,
        condition_errors: list[tuple[str, str, str]] = _NEW,
        when: str | None = None,
    ) -> None:
        self.created = [] if created is _NEW else created
        self.changed = [] if changed is _NEW else changed
        self.ready = [] if ready is _NEW else ready
        self.abandoned = [] if abandoned is _NEW else abandoned
        self.latest_kwargs = {} if latest_kwargs is _NEW else latest_kwargs
        self.first_of = [] if first_of is _NEW else first_of
        self.leases_set = {} if leases_set is _NEW else leases_set
        self.leases_dropped = set() if leases_dropped is _NEW else leases_dropped
        self.unwaited = {} if unwaited is _NEW else unwaited
        self.timers_add = {} if timers_add is _NEW else timers_add
        self.condition_errors = [] if condition_errors is _NEW else condition_errors
        self.when = when

    def extend(self, other: Effects) -> Effects:
        self.created += other.created
        self.changed += other.changed
        self.ready += other.ready
        self.abandoned += other.abandoned
        self.latest_kwargs.update(other.latest_kwargs)
        for name, names in other.unwaited.items():
            self.unwaited.setdefault(name, set()).update(names)
        self.first_of += other.first_of
        self.timers_add.update(other.timers_add)
        self.condition_errors += other.condition_errors
        self.when = other.when or self.when
        for name, lease in other.leases_set.items():
            self.leases_set[name] = lease
            self.leases_dropped.discard(name)
        for name in other.leases_dropped:
            self.leases_set.pop(name, None)
            self.leases_dropped.add(name)
        return self
