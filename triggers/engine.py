"""The workflow rules (SPEC §3), apart from any I/O.

Every operation works on session data that is already loaded and returns
the :class:`Effects` to write; it never reads or writes storage, dispatches
or logs. Each one comes with the :class:`Load` it needs, so the caller
fetches that first (one round trip) and the rule never stops halfway to ask
for more.

The rules edit the loaded instances they are given in place (the caller's
working copies, as a reducer edits its draft) and list them in
``Effects.changed``; new instances are listed in ``Effects.created``.
:class:`MemorySession` holds a whole session in memory, for tests and
tools that need the rules without a backend. What an operation loads and
returns (:class:`Load`, :class:`SessionData`, :class:`Effects`) is defined
in :mod:`triggers.effects` and importable from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .conditions import counts_for, passing
from .effects import (
    Effects,
    Load,
    SessionData,
    instance_sort_key,
    load_for_finish,
    load_for_fire,
    load_for_instance,
    task_of,
)
from .exceptions import InstanceStateError
from .readiness import is_abandoned, is_ready, progress_of, receive, requirements_met
from .schedule import DEADLINE, deadline_timer
from .types import TaskConfig, TaskInstance, now_iso
from .validation import copy_json

__all__ = [
    "Claim",
    "Effects",
    "Load",
    "MemorySession",
    "SessionData",
    "apply_trigger",
    "claim",
    "end_run",
    "finish",
    "load_for_fire",
    "load_for_instance",
    "load_for_finish",
    "may_fail_unstarted",
    "owns",
    "check_resend",
    "progress_of",
    "requirements_met",
    "replay_failed",
    "retry",
    "skip_failed",
    "task_of",
]


def _new_instance(
    config: TaskConfig,
    number: int,
    kwargs: dict[str, Any],
    abandon_state: dict[str, Any],
    when: str | None = None,
) -> TaskInstance:
    when = when or now_iso()
    # Stamped as set_status() would stamp an unstarted instance, in one go.
    status = TaskInstance.STATUS_UNSTARTED
    stamps = {"created": when, status: when, "last_modified": when}
    # (The dicts are this instance's own: nothing else holds them.)
    return TaskInstance._new(
        f"{config.name}#{number}", config, kwargs, abandon_state, {"timestamps": stamps}
    )


def _create_instance(
    session: SessionData, config: TaskConfig, number: int, when: str | None = None
) -> TaskInstance:
    """A new unstarted instance ``<task>#<number>``, seeded with the latest
    kwargs of the triggers its task mentions that fired before (those whose
    ``if`` condition holds on them)."""
    seeds = passing(config.conditions, session.seed_kwargs(config))
    kwargs: dict[str, Any] = {}
    abandon_state: dict[str, Any] = {}
    if seeds:  # (a task's first fire usually finds nothing to seed)
        for t in config.after:
            if t in seeds:
                kwargs[t] = copy_json(seeds[t])
        for t in config.unless:
            if t in seeds:
                abandon_state[t] = copy_json(seeds[t])
    return _new_instance(config, number, kwargs, abandon_state, when)


def _deadline(inst: TaskInstance) -> dict[str, dict[str, Any]]:
    """The timer a new instance sets if its task has a ``deadline``: it fires
    the directive's trigger when due if the instance is still unstarted then
    (one id per instance, so setting it again changes nothing)."""
    config = inst.config
    if type(config) is TaskConfig and DEADLINE not in config.extras:
        # The usual task: no deadline (and a TaskConfig has no ``deadline``
        # attribute for deadline_of() to look for, at the cost of an
        # AttributeError).
        return {}
    timer = deadline_timer(config, inst.name)
    return {} if timer is None else {f"deadline:{inst.name}": timer}


# -- firing -------------------------------------------------------------------


def apply_trigger(session: SessionData, trigger: str, kwargs: Mapping[str, Any]) -> Effects:
    """Apply one fire of ``trigger`` (loaded with :func:`load_for_fire`).

    Each task that mentions it (in name order) gets it on every instance
    still waiting on it; a task without instances, or an ``andEvery`` task
    none of whose instances waits, gets a new instance seeded with the
    latest kwargs of its triggers that fired before. An instance that has
    every ``unless`` trigger is abandoned; one with every ``after`` trigger
    is ready. A task whose ``if`` condition on the trigger is false for
    ``kwargs`` is left alone.
    """
    when = now_iso()  # one time for everything this fire changes
    fx = Effects(when=when)
    for config in session.tasks_for(trigger):
        if config.conditions:  # (most tasks have no ``if``: nothing to evaluate)
            counts, error = counts_for(config.conditions, trigger, kwargs)
            if not counts:
                if error is not None:
                    fx.condition_errors.append((config.name, trigger, error))
                continue
        number = session.counters.get(config.name, 0)
        candidates = [] if number == 0 else session.waiting(config.name, trigger)
        if number == 0 or (not candidates and trigger == config.and_every):
            if number == 0:
                fx.first_of.append(config.name)
            inst = _create_instance(session, config, number, when)
            fx.created.append(inst)
            fx.timers_add.update(_deadline(inst))
            candidates = [inst]
        else:
            fx.changed += candidates
        for inst in candidates:
            gone = receive(inst, trigger, kwargs)  # a new set, the instance's first entry here
            known = fx.unwaited.get(inst.name)
            if known is None:
                fx.unwaited[inst.name] = gone
            else:
                known.update(gone)
            inst.touch(when)
            if is_abandoned(inst):
                inst.set_status(TaskInstance.STATUS_ABANDONED)
                fx.abandoned.append(inst)
            elif is_ready(inst):
                fx.ready.append(inst)
    fx.latest_kwargs[trigger] = kwargs
    return fx


# -- repairing failed instances ---------------------------------------------------


def _clone(
    session: SessionData,
    inst: TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None,
    cooldown: float | None = None,
) -> TaskInstance:
    clone = _new_instance(
        inst.config,
        session.counters.get(inst.config.name, 0),
        kwargs=copy.deepcopy(
            dict(replacement_kwargs) if replacement_kwargs is not None else inst.kwargs
        ),
        abandon_state=copy.deepcopy(inst.abandon_state),
    )
    clone.metadata["parent"] = inst.name
    clone.metadata["depth"] = int(inst.metadata.get("depth", 0)) + 1
    if cooldown:
        clone.metadata["cooldown"] = cooldown
    return clone


def replay_failed(
    session: SessionData, inst: TaskInstance, replacement_kwargs: Mapping[str, Any] | None
) -> Effects:
    """Mark a failed instance ``replayed``; its clone is ready at once.
    ``replacement_kwargs`` replaces the clone's kwargs (``None`` keeps them)."""
    if not inst.can_replay:
        raise InstanceStateError(inst.name, inst.status, "only failed instances can be replayed")
    inst.set_status(TaskInstance.STATUS_REPLAYED)
    clone = _clone(session, inst, replacement_kwargs)
    return Effects(created=[clone], changed=[inst], ready=[clone])


def skip_failed(
    session: SessionData, inst: TaskInstance, cascade: bool, result: Mapping[str, Any]
) -> Effects:
    """Mark a failed instance ``skipped``; with ``cascade`` fire its task's
    name with ``result`` as if it had finished (load :func:`load_for_finish`)."""
    if not inst.can_skip:
        raise InstanceStateError(inst.name, inst.status, "only failed instances can be skipped")
    inst.set_status(TaskInstance.STATUS_SKIPPED)
    fx = Effects(changed=[inst])
    if cascade:
        inst.metadata["result"] = dict(result)
        fx.extend(apply_trigger(session, inst.config.name, result))
    return fx


def check_resend(inst: TaskInstance, lease_left: int) -> None:
    """Refuse to re-send an instance that is neither ready nor stuck in
    ``scheduled``/``running``, or whose worker still holds it."""
    allowed = (TaskInstance.STATUS_SCHEDULED, TaskInstance.STATUS_RUNNING)
    if not (inst.can_run or inst.status in allowed):
        raise InstanceStateError(
            inst.name, inst.status, "only ready, scheduled or running instances can be re-sent"
        )
    if inst.status == TaskInstance.STATUS_RUNNING:
        if lease_left > 0:
            # Its worker is alive and renewing its claim; a second run would
            # only be thrown away.
            raise InstanceStateError(
                inst.name, inst.status, f"its worker still holds it ({lease_left / 1000:.1f}s left)"
            )
        inst.metadata["resent_from_running"] = True


# -- the worker's steps --------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What a worker holding a message for an instance should do.

    ``outcome`` is ``'run'`` (``instance`` is now this run's), ``'busy'``
    (another live worker holds it for ``wait_ms`` more), ``'done'`` (it
    already ended: ``instance``) or ``'skip'`` (drop the message: ``reason``).
    """

    outcome: Literal["run", "busy", "done", "skip"]
    instance: TaskInstance | None = None
    wait_ms: int = 0
    reason: str = ""


def claim(
    inst: TaskInstance | None,
    session_exists: bool,
    lease_left: int,
    token: str,
    lease_ms: int,
) -> tuple[Claim, Effects]:
    """Take ownership of an instance for one run (load :func:`load_for_instance`)."""
    if inst is None:
        reason = "no such instance" if session_exists else "the session has vanished"
        return Claim("skip", reason=reason), Effects()
    if inst.status == TaskInstance.STATUS_RUNNING:
        if lease_left > 0:
            return Claim("busy", wait_ms=lease_left), Effects()
        inst.metadata["takeovers"] = int(inst.metadata.get("takeovers", 0)) + 1
    elif inst.status != TaskInstance.STATUS_SCHEDULED and not inst.can_run:
        if inst.is_resolved or inst.status == TaskInstance.STATUS_FAILED:
            return Claim("done", instance=inst), Effects()
        return Claim("skip", reason=f"instance is {inst.status}"), Effects()
    inst.set_status(TaskInstance.STATUS_RUNNING)
    inst.token = token
    inst.metadata["attempts"] = int(inst.metadata.get("attempts", 0)) + 1
    return Claim("run", instance=inst), Effects(
        changed=[inst], leases_set={inst.name: (token, lease_ms)}
    )


def owns(inst: TaskInstance, token: str) -> bool:
    """Whether the run holding ``token`` still owns the instance."""
    return inst.status == TaskInstance.STATUS_RUNNING and inst.token == token


def may_fail_unstarted(inst: TaskInstance | None, lease_left: int) -> bool:
    """Whether a dispatched instance whose run could not start may be marked
    ``failed``: not if it moved on meanwhile or a live worker holds it."""
    if inst is None or inst.is_resolved or inst.status == TaskInstance.STATUS_FAILED:
        return False
    if inst.status == TaskInstance.STATUS_RUNNING and lease_left > 0:
        return False
    return not (inst.status == TaskInstance.STATUS_UNSTARTED and not inst.can_run)


def end_run(inst: TaskInstance, status: str, metadata: Mapping[str, Any]) -> Effects:
    """Record the end of a run (``failed``, ``skipped``, ...); frees its lease."""
    inst.metadata.update(metadata)
    inst.set_status(status)
    inst.token = None
    return Effects(changed=[inst], leases_dropped={inst.name})


def finish(
    session: SessionData,
    inst: TaskInstance,
    result: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> Effects:
    """Store a run's result and fire the cascade (load :func:`load_for_finish`)."""
    inst.metadata.update(metadata)
    inst.metadata["result"] = result
    fx = end_run(inst, TaskInstance.STATUS_FINISHED, {})
    return fx.extend(apply_trigger(session, inst.config.name, result))


def retry(
    session: SessionData,
    inst: TaskInstance,
    metadata: Mapping[str, Any],
    replacement_kwargs: Mapping[str, Any] | None,
    cooldown: float | None,
) -> Effects:
    """Mark a run ``replayed``; its clone is ready to run after ``cooldown``."""
    fx = end_run(inst, TaskInstance.STATUS_REPLAYED, metadata)
    clone = _clone(session, inst, replacement_kwargs, cooldown)
    return fx.extend(Effects(created=[clone], ready=[clone]))


# -- a session in memory -----------------------------------------------------------


@dataclass
class MemorySession:
    """A whole session held in memory: the rules with no backend at all."""

    configs: dict[str, TaskConfig]
    instances: dict[str, TaskInstance] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    latest_kwargs: dict[str, Any] = field(default_factory=dict)

    def tasks_for(self, trigger: str) -> list[TaskConfig]:
        return [
            self.configs[n] for n in sorted(self.configs) if trigger in self.configs[n].triggers
        ]

    def waiting(self, task: str, trigger: str) -> list[TaskInstance]:
        found = [
            i
            for i in self.instances.values()
            if i.config.name == task and trigger in i.waiting_on()
        ]
        return sorted(found, key=lambda i: instance_sort_key(i.name))

    def seed_kwargs(self, config: TaskConfig) -> dict[str, Any]:
        return {t: self.latest_kwargs[t] for t in config.triggers if t in self.latest_kwargs}

    def apply(self, effects: Effects) -> Effects:
        """Take ``effects`` in (new instances, counters, latest kwargs)."""
        for inst in effects.created:
            self.instances[inst.name] = inst
            self.counters[inst.config.name] = max(
                self.counters.get(inst.config.name, 0), inst.number + 1
            )
        self.latest_kwargs.update(effects.latest_kwargs)
        return effects
