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


@dataclass(frozen=True)
class Load:
    """The part of a session an operation reads: the tasks that mention
    ``triggers`` with their waiting instances (read without what they
    received: :attr:`~TaskInstance.partial`), the named ``instances`` whole
    with their tasks, or everything. A new instance's seed kwargs are asked
    for through :meth:`SessionData.seed_kwargs` (a backend may read them
    with the fire's first read when it sees an instance will be created)."""

    triggers: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    everything: bool = False


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


@dataclass
class Effects:
    """What one rule changed; the caller writes it in one commit."""

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
