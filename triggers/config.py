"""Validating task configurations, collecting every problem at once.

:meth:`TaskConfig.from_directives <triggers.types.TaskConfig.from_directives>`
checks one task's directives; :func:`check_configuration` checks a whole
``{task name: directives}`` mapping -- every task, then the cascade cycles
of the valid ones (:func:`~triggers.graph.find_cascade_cycle`) -- and
returns each problem found, so a caller can report them all
(``triggers_validate``, ``manage.py check``) or raise the first
(:func:`validate_configuration`, what ``update_configuration`` does).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import conf
from .conditions import check_conditions, parse_rule
from .exceptions import ConfigurationError, InvalidTriggerError, InvalidTriggerTypeError
from .graph import find_cascade_cycle
from .schedule import DEADLINE, check_deadline
from .types import TaskConfig
from .validation import check_json_tree, check_name, dump_json

__all__ = [
    "KNOWN_DIRECTIVES",
    "ConfigProblem",
    "check_configuration",
    "directive_fields",
    "validate_configuration",
]


KNOWN_DIRECTIVES = ("after", "run", "andEvery", "unless", "withParams", "using", "if")


def _suggest(directive: str) -> str | None:
    """The known directive ``directive`` was probably meant to be, if any."""
    folded = directive.replace("_", "").replace("-", "").lower()
    for known in KNOWN_DIRECTIVES:
        if known.lower() == folded:
            return known
    matches = difflib.get_close_matches(directive, KNOWN_DIRECTIVES, n=1, cutoff=0.75)
    if not matches:
        lowered = {k.lower(): k for k in KNOWN_DIRECTIVES}
        found = difflib.get_close_matches(folded, list(lowered), n=1, cutoff=0.75)
        matches = [lowered[found[0]]] if found else []
    return matches[0] if matches else None


def directive_fields(
    name: Any, directives: Any, check_using: Callable[[str, Any], None]
) -> dict[str, Any]:
    """Check one task's JSON directives; the keyword arguments of its
    :class:`~triggers.types.TaskConfig`. ``check_using(task, value)`` checks
    a ``using`` directive against the runner registry. Raises
    :class:`ConfigurationError` naming the task and directive."""
    try:
        check_name(name, "task name")
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise ConfigurationError(
            str(exc), task=name if isinstance(name, str) else repr(name)
        ) from None
    if not isinstance(directives, Mapping):
        raise ConfigurationError(
            f"the configuration must be a mapping of directives, not {type(directives).__name__}",
            task=name,
        )
    extras: dict[str, Any] = {}
    for key, value in directives.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"directive names must be strings, not {key!r}", task=name)
        if key in KNOWN_DIRECTIVES:
            continue
        suggestion = _suggest(key)
        if suggestion is not None:
            raise ConfigurationError(
                "unknown directive", task=name, directive=key, suggestion=suggestion
            )
        extras[key] = value
    for required in ("after", "run"):
        if required not in directives:
            raise ConfigurationError("is required", task=name, directive=required)

    after = parse_rule(name, "after", directives["after"])
    run = directives["run"]
    if not isinstance(run, str) or not run.strip():
        raise ConfigurationError(
            f"must be the name of a Celery task (a non-empty string), not {run!r}",
            task=name,
            directive="run",
        )
    try:
        check_name(run, "Celery task name")
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise ConfigurationError(str(exc), task=name, directive="run") from None

    and_every = directives.get("andEvery")
    if and_every is not None:
        if isinstance(and_every, list | tuple | set):
            raise ConfigurationError(
                "takes one trigger name, not a list", task=name, directive="andEvery"
            )
        try:
            check_name(and_every, "trigger name")
        except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
            raise ConfigurationError(str(exc), task=name, directive="andEvery") from None
    if not after and and_every is None:
        raise ConfigurationError(
            "must name at least one trigger (or give andEvery)", task=name, directive="after"
        )
    for group in after.groups:
        if and_every in group.of:
            raise ConfigurationError(
                f"{and_every!r} is required on its own (every fire of it makes an instance), "
                f"so it cannot also be a member of '{group.describe()}' in after; "
                "drop it from the group",
                task=name,
                directive="andEvery",
            )

    unless = parse_rule(name, "unless", directives.get("unless") or [])
    mentioned = after.names | unless.names | ({and_every} if and_every else set())
    conditions = check_conditions(name, directives.get("if") or {}, mentioned)

    with_params = directives.get("withParams") or {}
    if not isinstance(with_params, Mapping):
        raise ConfigurationError(
            f"must map trigger names to dicts of kwargs, not {type(with_params).__name__}",
            task=name,
            directive="withParams",
        )
    for trigger, params in with_params.items():
        if not isinstance(trigger, str) or not isinstance(params, Mapping):
            raise ConfigurationError(
                f"must map trigger names to dicts of kwargs; entry {trigger!r} "
                f"is {type(params).__name__}",
                task=name,
                directive="withParams",
            )
        if not all(isinstance(k, str) for k in params):
            raise ConfigurationError(
                f"kwargs for {trigger!r} must have string keys",
                task=name,
                directive="withParams",
            )
    try:
        check_json_tree("withParams", with_params, int(conf.get("MAX_KWARGS_DEPTH")))
        dump_json(with_params, "withParams")
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise ConfigurationError(str(exc), task=name, directive="withParams") from None

    using = directives.get("using")
    if using is not None:
        check_using(name, using)
    for key, value in extras.items():
        try:
            check_json_tree(f"directive {key!r}", value, int(conf.get("MAX_KWARGS_DEPTH")))
            dump_json(value, f"directive {key!r}")
        except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
            raise ConfigurationError(str(exc), task=name, directive=key) from None
    if DEADLINE in extras:  # kept in extras; see triggers.schedule
        extras[DEADLINE] = check_deadline(name, extras[DEADLINE])

    return dict(
        name=name,
        after=after,
        run=run,
        and_every=and_every,
        unless=unless,
        with_params=copy.deepcopy(dict(with_params)),
        using=using,
        extras=copy.deepcopy(extras),
        conditions=conditions,
    )


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a configuration: a task's directive (``'directive'``,
    or ``'using'`` for an unknown runner), a cascade ``'cycle'``, or a
    configuration that is not a mapping at all (``'shape'``)."""

    kind: Literal["directive", "using", "cycle", "shape"]
    error: ConfigurationError


def check_configuration(
    configuration: Any, existing: Mapping[str, TaskConfig] | None = None
) -> tuple[dict[str, TaskConfig], list[ConfigProblem]]:
    """The configs of the valid tasks and every problem, in task order (the
    cycle check runs on the valid tasks merged into ``existing``)."""
    if not isinstance(configuration, Mapping):
        error = ConfigurationError(
            f"a configuration maps task names to directives; got {type(configuration).__name__}"
        )
        return {}, [ConfigProblem("shape", error)]
    configs: dict[str, TaskConfig] = {}
    problems: list[ConfigProblem] = []
    for name, value in configuration.items():
        try:
            configs[name] = TaskConfig.from_directives(name, value)
        except ConfigurationError as exc:
            kind: Literal["using", "directive"] = (
                "using" if exc.directive == "using" else "directive"
            )
            problems.append(ConfigProblem(kind, exc))
    merged = dict(existing or {})
    merged.update(configs)
    cycle = find_cascade_cycle(merged)
    if cycle:
        ring = " -> ".join(cycle)
        error = ConfigurationError(
            f"can never run: the tasks wait on each other's cascades in a cycle ({ring})",
            task=cycle[0],
            directive="after",
        )
        problems.append(ConfigProblem("cycle", error))
    return configs, problems


def validate_configuration(
    configuration: Any, existing: Mapping[str, TaskConfig] | None = None
) -> dict[str, TaskConfig]:
    """Validate a whole ``{task name: directives}`` mapping.

    ``existing`` are the tasks already configured; the cascade-cycle check runs
    on the merged result. Returns the new configs; raises the first
    :class:`ConfigurationError` (see :func:`check_configuration` for all of
    them) and builds nothing on any problem.
    """
    configs, problems = check_configuration(configuration, existing)
    if problems:
        raise problems[0].error
    return configs
