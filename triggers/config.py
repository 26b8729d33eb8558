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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .exceptions import ConfigurationError
from .graph import find_cascade_cycle
from .types import TaskConfig

__all__ = ["ConfigProblem", "check_configuration", "validate_configuration"]


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
