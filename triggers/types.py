"""The two value types of a session: task configurations and task instances."""

from __future__ import annotations

import copy
import difflib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .conditions import Group, Rule, rule_of
from .exceptions import ConfigurationError
from .readiness import progress_of, requirements_met
from .registry import task_runners

# Also ``validate_configuration`` and ``find_cascade_cycle``, looked up late
# (see ``__getattr__`` below).
__all__ = ["TaskConfig", "TaskInstance"]


#: ``(Unix second, its ISO-8601 text up to the seconds)`` of the latest
#: :func:`now_iso` call: every change a fire makes is stamped, and most
#: stamps fall in the second of the one before.
_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current UTC time as ``datetime.now(UTC).isoformat()`` writes it
    (microseconds left out when they are 0), built from the clock that
    ``datetime.now()`` reads (rounded down to the microsecond as it is) with
    the date and time of day formatted once per second: half the cost."""
    global _second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    second = _second
    if second[0] != seconds:
        # (One tuple, replaced whole: a thread reading it meanwhile sees
        # the old second or the new one, never a mix.)
        second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    if micros:
        return f"{second[1]}.{micros:06d}+00:00"
    return f"{second[1]}+00:00"


def _check_using(name: str, using: Any) -> None:
    """A ``using`` directive must name a registered task runner."""
    if not isinstance(using, str):
        raise ConfigurationError(
            f"must be a task runner name, not {using!r}", task=name, directive="using"
        )
    if using not in task_runners:
        known = sorted(task_runners.keys())
        close = difflib.get_close_matches(using, known, n=1)
        raise ConfigurationError(
            f"unknown task runner {using!r}; known runners: {', '.join(known)}",
            task=name,
            directive="using",
            suggestion=close[0] if close else None,
        )


class TaskConfig:
    """A named rule: after ``after`` have all fired, run the Celery task ``run``.

    Build one from JSON-style directives with :meth:`from_directives`; it
    validates and raises :class:`~triggers.exceptions.ConfigurationError`
    naming the task and directive.
    """

    __slots__ = (
        "name",
        "after",
        "run",
        "and_every",
        "unless",
        "with_params",
        "using",
        "extras",
        "after_rule",
        "unless_rule",
        "conditions",
    )

    def __init__(
        self,
        name: str,
        after: Iterable[str | Group | Mapping[str, Any]],
        run: str,
        and_every: str | None = None,
        unless: Iterable[str | Group | Mapping[str, Any]] | None = None,
        with_params: Mapping[str, Mapping[str, Any]] | None = None,
        using: str | None = None,
        extras: Mapping[str, Any] | None = None,
        conditions: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        #: What ``after``/``unless`` ask for, groups included
        #: (:class:`~triggers.conditions.Rule`); ``after``/``unless`` are
        #: every trigger name they mention.
        self.after_rule: Rule = rule_of(after, and_every or None)
        self.unless_rule: Rule = rule_of(unless or ())
        self.after = set(self.after_rule.names)
        self.run = run
        self.and_every = and_every
        self.unless = set(self.unless_rule.names)
        #: ``if``: trigger name -> CEL expression.
        self.conditions: dict[str, str] = dict(conditions or {})
        self.with_params: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (with_params or {}).items()
        }
        self.using = using
        self.extras: dict[str, Any] = dict(extras or {})

    @classmethod
    def from_directives(cls, name: Any, directives: Any) -> TaskConfig:
        """Validate the JSON form of one task and build its config."""
        from .config import directive_fields  # config imports this module

        return cls(**directive_fields(name, directives, _check_using))

    def to_directives(self) -> dict[str, Any]:
        """The JSON form (inverse of :meth:`from_directives`)."""
        data: dict[str, Any] = {"after": self.after_rule.to_json(), "run": self.run}
        if self.and_every is not None:
            data["andEvery"] = self.and_every
        if self.unless:
            data["unless"] = self.unless_rule.to_json()
        if self.conditions:
            data["if"] = dict(self.conditions)
        if self.with_params:
            data["withParams"] = copy.deepcopy(self.with_params)
        if self.using is not None:
            data["using"] = self.using
        data.update(copy.deepcopy(self.extras))
        return data

    @property
    def triggers(self) -> set[str]:
        """Every trigger this task reacts to (``after`` and ``unless``)."""
        return self.after | self.unless

    def uses_trigger(self, trigger_name: str) -> bool:
        return trigger_name in self.after or trigger_name in self.unless

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskConfig):
            return NotImplemented
        return self.name == other.name and self.to_directives() == other.to_directives()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        # As the original showed it; ``to_directives()`` has the rest.
        return f"<TaskConfig {self.name!r}>"


def __getattr__(name: str) -> object:
    # Published here first; they live with the validation and graph code now
    # (config.py and graph.py import this module, so they are looked up late).
    if name == "validate_configuration":
        from .config import validate_configuration

        return validate_configuration
    if name == "find_cascade_cycle":
        from .graph import find_cascade_cycle

        return find_cascade_cycle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskInstance:
    """One execution of a trigger task within a session (``<task>#<n>``)."""

    STATUS_UNSTARTED = "unstarted"
    STATUS_SCHEDULED = "scheduled"
    STATUS_RUNNING = "running"
    STATUS_FINISHED = "finished"
    STATUS_FAILED = "failed"
    STATUS_REPLAYED = "replayed"
    STATUS_SKIPPED = "skipped"
    STATUS_ABANDONED = "abandoned"

    STATUSES = (
        STATUS_UNSTARTED,
        STATUS_SCHEDULED,
        STATUS_RUNNING,
        STATUS_FINISHED,
        STATUS_FAILED,
        STATUS_REPLAYED,
        STATUS_SKIPPED,
        STATUS_ABANDONED,
    )
    RESOLVED_STATUSES = frozenset(
        {STATUS_FINISHED, STATUS_ABANDONED, STATUS_REPLAYED, STATUS_SKIPPED}
    )
    # Statuses in which whatever the task logged no longer needs attention.
    LOGS_IRRELEVANT_STATUSES = frozenset({STATUS_ABANDONED, STATUS_REPLAYED, STATUS_SKIPPED})

    __slots__ = (
        "name",
        "config",
        "status",
        "kwargs",
        "abandon_state",
        "metadata",
        "token",
        "progress",
        "partial",
    )

    def __init__(
        self,
        name: str,
        config: TaskConfig,
        status: str = STATUS_UNSTARTED,
        kwargs: Mapping[str, Any] | None = None,
        abandon_state: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        token: str | None = None,
        progress: Mapping[str, Any] | None = None,
        partial: bool = False,
    ) -> None:
        self.name = name
        self.config = config
        self.status = status
        #: Kwargs received so far, keyed by ``after`` trigger.
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        #: Kwargs received so far, keyed by ``unless`` trigger.
        self.abandon_state: dict[str, Any] = dict(abandon_state or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        #: Identifies the worker run that currently owns a running instance.
        self.token = token
        #: Set when the instance was loaded without what it received (a fire
        #: reads only the record of an instance waiting on its trigger):
        #: ``kwargs``/``abandon_state`` then hold only what this operation
        #: gave it, and readiness comes from :attr:`progress`.
        self.partial = partial
        #: How far its ``after``/``unless`` requirements are met, as the
        #: engine counts them (:func:`triggers.engine.progress_of`); kept
        #: up to date by the engine only while :attr:`partial`.
        self.progress: dict[str, Any] | None = dict(progress) if progress is not None else None

    # -- naming -------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self.config.name

    @property
    def number(self) -> int:
        return int(self.name.rsplit("#", 1)[1])

    # -- meta-statuses --------------------------------------------------------
    @property
    def can_schedule(self) -> bool:
        return self.status == self.STATUS_UNSTARTED

    @property
    def can_abandon(self) -> bool:
        if self.status != self.STATUS_UNSTARTED or not self.config.unless:
            return False
        if self.partial:
            return self._counted("unless")
        return self.config.unless_rule.met(self.abandon_state)

    @property
    def can_run(self) -> bool:
        if self.status != self.STATUS_UNSTARTED:
            return False
        if self.partial:
            met = self._counted("after")
        else:
            met = self.config.after_rule.met(self.kwargs)
        return met and not self.can_abandon

    def _counted(self, side: str) -> bool:
        return requirements_met(self, side)

    @property
    def can_replay(self) -> bool:
        return self.status == self.STATUS_FAILED

    @property
    def can_skip(self) -> bool:
        return self.status == self.STATUS_FAILED

    @property
    def is_resolved(self) -> bool:
        return self.status in self.RESOLVED_STATUSES

    @property
    def missing_triggers(self) -> set[str]:
        """``after`` triggers this instance is still waiting on (members of
        a group already satisfied are not)."""
        return self.config.after_rule.missing(self.kwargs)

    # -- logs ---------------------------------------------------------------
    @property
    def log_level(self) -> int:
        """Highest level logged while running (``logging.NOTSET`` until it ran)."""
        return int(self.metadata.get("log_level", logging.NOTSET))

    @property
    def log_level_name(self) -> str:
        return logging.getLevelName(self.log_level)

    @property
    def logs_resolved(self) -> bool:
        return (
            self.log_level < logging.ERROR
            or self.status in self.LOGS_IRRELEVANT_STATUSES
            or bool(self.metadata.get("logs_resolved"))
        )

    # -- serialisation -------------------------------------------------------
    def waiting_on(self) -> set[str]:
        """The triggers under which the session's waiting index lists this
        instance: everything it has not received yet, while unstarted
        (known only when it was loaded whole, not :attr:`partial`)."""
        if self.status != self.STATUS_UNSTARTED:
            return set()
        if self.partial:
            raise RuntimeError(f"{self.name} was loaded without what it received")
        return self.config.after_rule.missing(self.kwargs) | self.config.unless_rule.missing(
            self.abandon_state
        )

    def to_record(self, kwargs: bool = True) -> dict[str, Any]:
        """The stored form. ``kwargs=False`` leaves out what the instance
        received, for a backend that stores it apart (one entry per trigger,
        so applying a trigger writes one); ``progress`` says how far its
        requirements are met either way. A :attr:`partial` instance never
        includes kwargs (it does not hold them all)."""
        record: dict[str, Any] = {"task": self.config.name, "status": self.status}
        if kwargs and not self.partial:
            record["kwargs"] = self.kwargs
            record["abandon_state"] = self.abandon_state
        record["metadata"] = self.metadata
        if self.token is not None:
            record["token"] = self.token
        if self.partial and self.progress is not None:
            record["progress"] = self.progress
        else:
            record["progress"] = progress_of(self.config, self.kwargs, self.abandon_state)
        return record

    @classmethod
    def from_record(cls, name: str, record: Mapping[str, Any], config: TaskConfig) -> TaskInstance:
        """Rebuild an instance from :meth:`to_record`'s form (or an older
        release's, which always held the kwargs); a record with ``progress``
        but without ``kwargs`` gives a :attr:`partial` instance."""
        return cls(
            name=name,
            config=config,
            status=record["status"],
            kwargs=record.get("kwargs"),
            abandon_state=record.get("abandon_state"),
            metadata=record.get("metadata"),
            token=record.get("token"),
            progress=record.get("progress"),
            partial="kwargs" not in record and "progress" in record,
        )

    @classmethod
    def _new(
        cls,
        name: str,
        config: TaskConfig,
        kwargs: dict[str, Any],
        abandon_state: dict[str, Any],
        metadata: dict[str, Any],
    ) -> TaskInstance:
        """A new unstarted instance that keeps the dicts it is given as its
        own (the engine builds them for it, so the copies ``__init__``
        makes would be thrown away; every fire that creates an instance
        comes here)."""
        inst = cls.__new__(cls)
        inst.name = name
        inst.config = config
        inst.status = cls.STATUS_UNSTARTED
        inst.kwargs = kwargs
        inst.abandon_state = abandon_state
        inst.metadata = metadata
        inst.token = None
        inst.partial = False
        inst.progress = None
        return inst

    def copy(self) -> TaskInstance:
        return TaskInstance(
            self.name,
            self.config,
            self.status,
            copy.deepcopy(self.kwargs),
            copy.deepcopy(self.abandon_state),
            copy.deepcopy(self.metadata),
            self.token,
            copy.deepcopy(self.progress),
            self.partial,
        )

    def set_status(self, status: str, when: str | None = None) -> None:
        """Change status and stamp the time of the change."""
        when = when or now_iso()
        self.status = status
        stamps = self.metadata.setdefault("timestamps", {})
        stamps[status] = when
        stamps["last_modified"] = when

    def touch(self, when: str | None = None) -> None:
        self.metadata.setdefault("timestamps", {})["last_modified"] = when or now_iso()

    def __repr__(self) -> str:
        return f"<TaskInstance {self.name} {self.status}>"
