"""Whether an instance has what it waits for (SPEC §3, §14): the
requirement counting behind readiness, apart from any I/O.

An instance read whole holds every kwargs it received, and the rules of its
config answer from them (``TaskInstance.can_run``/``can_abandon``). A fire
reads the instances waiting on its trigger ``partial``: they hold only what
this operation gave them, and ``progress`` counts the requirements still
unmet, so applying a trigger costs the same whatever the width of ``after``.
The functions here keep the two in step; the engine calls :func:`receive`
for every instance a fire reaches, then :func:`is_abandoned` and
:func:`is_ready`.

``progress`` (stored in the instance record): ``{"after": n, "unless": m}``,
the number of unmet requirements of each side (a plain name or a group is
one requirement), plus ``"after_groups"``/``"unless_groups"``: how many
members of each group (in ``rule.groups`` order) fired, when the side has
groups. A side is met when its count is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .validation import copy_json

if TYPE_CHECKING:
    from .types import TaskConfig, TaskInstance

__all__ = [
    "SIDES",
    "initial_progress",
    "is_abandoned",
    "is_ready",
    "progress_of",
    "receive",
    "requirements_met",
]

#: The two sides of a config a trigger can count towards.
SIDES = ("after", "unless")


def _rule(config: TaskConfig, side: str) -> Any:
    return config.after_rule if side == "after" else config.unless_rule


def _received(inst: TaskInstance, side: str) -> dict[str, Any]:
    return inst.kwargs if side == "after" else inst.abandon_state


def progress_of(
    config: TaskConfig, kwargs: Mapping[str, Any], abandon_state: Mapping[str, Any]
) -> dict[str, Any]:
    """Count, from everything an instance received, how many requirements of
    each side are unmet (``'after'``, ``'unless'``) and how many members of
    each group fired (``'after_groups'``, ``'unless_groups'``, only when the
    side has groups)."""
    # Plain loops, no generator per side: every instance a commit writes
    # whole is counted here.
    progress: dict[str, Any] = {}
    for side, rule, received in (
        ("after", config.after_rule, kwargs),
        ("unless", config.unless_rule, abandon_state),
    ):
        unmet = 0
        for name in rule.plain:
            if name not in received:
                unmet += 1
        if not rule.groups:
            progress[side] = unmet
            continue
        counts = [group.count(received) for group in rule.groups]
        for group, n in zip(rule.groups, counts, strict=True):
            if n < group.need:
                unmet += 1
        progress[side] = unmet
        progress[f"{side}_groups"] = counts
    return progress


def initial_progress(config: TaskConfig) -> dict[str, Any]:
    """The progress of an instance that received nothing."""
    return progress_of(config, {}, {})


def requirements_met(inst: TaskInstance, side: str) -> bool:
    """Whether a :attr:`~TaskInstance.partial` instance's ``side``
    (``'after'`` or ``'unless'``) is satisfied, from its counts."""
    if inst.progress is None:
        inst.progress = progress_of(inst.config, inst.kwargs, inst.abandon_state)
    return int(inst.progress.get(side, 0)) <= 0


def receive(inst: TaskInstance, trigger: str, kwargs: Mapping[str, Any]) -> set[str]:
    """Give ``trigger``'s kwargs to an instance waiting on it; returns the
    names it no longer waits on (the trigger, and the other members of a
    group it has just satisfied)."""
    gone = {trigger}
    config = inst.config
    # (The two sides spelt out, as _rule() and _received() would give them:
    # a fire receives on every instance it reaches.)
    for side, rule in (("after", config.after_rule), ("unless", config.unless_rule)):
        if trigger not in rule.names:
            continue
        received = inst.kwargs if side == "after" else inst.abandon_state
        if inst.partial and trigger not in received:
            _count(inst, side, rule, trigger, gone)
        received[trigger] = copy_json(kwargs)
    return gone


def _count(inst: TaskInstance, side: str, rule: Any, trigger: str, gone: set[str]) -> None:
    progress = inst.progress
    if progress is None:
        return
    if trigger in rule.plain:
        progress[side] = int(progress.get(side, 0)) - 1
    counts = progress.get(f"{side}_groups")
    for i, group in enumerate(rule.groups):
        if trigger in group.of and counts is not None:
            counts[i] += 1
            if counts[i] == group.need:
                progress[side] = int(progress.get(side, 0)) - 1
                gone.update(set(group.of) - _still_needed(inst))


def _still_needed(inst: TaskInstance) -> set[str]:
    """Names a partial instance may still wait on for another requirement:
    the plain names of both sides (one received already left the index) and
    the members of groups not yet satisfied. A member of a group that has
    just been satisfied stays in the index if one of these needs it."""
    progress = inst.progress or {}
    needed: set[str] = set()
    for side in SIDES:
        rule = _rule(inst.config, side)
        needed |= rule.plain
        counts = list(progress.get(f"{side}_groups") or ())
        # Counts missing (a record from before the task had groups): unmet.
        counts += [0] * (len(rule.groups) - len(counts))
        for group, n in zip(rule.groups, counts, strict=False):
            if n < group.need:
                needed.update(group.of)
    return needed


def is_abandoned(inst: TaskInstance) -> bool:
    return inst.can_abandon


def is_ready(inst: TaskInstance) -> bool:
    return inst.can_run
