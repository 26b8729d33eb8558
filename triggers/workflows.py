"""Named workflows declared in ``TRIGGERS['WORKFLOWS']``.

A workflow is a task configuration (``{task name: directives}``) given either
inline, as a JSON-compatible dict, or as the path of a ``.json`` file holding
one object. Everything here validates through
:func:`triggers.types.validate_configuration`, the function
``TriggerManager.update_configuration`` uses, so a workflow that loads here is
one the manager accepts, and errors read the same (plus the workflow's name).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import conf
from .config import check_configuration, validate_configuration
from .exceptions import ConfigurationError, UnknownWorkflowError, WorkflowFileError
from .types import TaskConfig

__all__ = [
    "Problem",
    "UnknownWorkflowError",
    "WorkflowFileError",
    "check_run_target",
    "configured_workflows",
    "find_problems",
    "get_workflow",
    "load_workflow",
    "read_workflow_file",
    "resolve_workflow_path",
    "validate_workflow",
]


def configured_workflows() -> Mapping[str, Any]:
    """``TRIGGERS['WORKFLOWS']`` as declared (sources, not yet loaded)."""
    workflows = conf.get("WORKFLOWS") or {}
    if not isinstance(workflows, Mapping):
        raise ConfigurationError(
            "TRIGGERS['WORKFLOWS'] must map workflow names to configurations or "
            f"JSON file paths, not {type(workflows).__name__}",
            directive="WORKFLOWS",
        )
    return workflows


def resolve_workflow_path(path: str | os.PathLike[str]) -> Path:
    """Absolute path of a workflow file (relative ones are taken from
    ``TRIGGERS['WORKFLOWS_DIR']``, else ``settings.BASE_DIR``)."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path(conf.workflows_dir()) / resolved
    return resolved


def read_workflow_file(path: str | os.PathLike[str], workflow: str | None = None) -> dict[str, Any]:
    """The JSON object in a workflow file (not yet validated)."""
    resolved = resolve_workflow_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowFileError(
            f"cannot read the workflow file ({exc.strerror or exc})",
            path=str(resolved),
            workflow=workflow,
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFileError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            path=str(resolved),
            workflow=workflow,
        ) from None
    if not isinstance(data, dict):
        raise WorkflowFileError(
            f"must hold one JSON object mapping task names to directives, "
            f"not a JSON {type(data).__name__}",
            path=str(resolved),
            workflow=workflow,
        )
    return data


def _load_source(source: Any, workflow: str | None) -> Any:
    """A declared workflow's configuration: inline mapping or file contents."""
    if isinstance(source, str | os.PathLike):
        return read_workflow_file(source, workflow)
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    raise ConfigurationError(
        f"must be a configuration dict or the path of a JSON file, not {type(source).__name__}",
        workflow=workflow,
    )


def validate_workflow(configuration: Any, workflow: str | None = None) -> dict[str, TaskConfig]:
    """Validate a configuration exactly as ``update_configuration`` would;
    errors also name ``workflow``."""
    try:
        return validate_configuration(configuration)
    except ConfigurationError as exc:
        if workflow is None or exc.workflow is not None:
            raise
        raise exc.in_workflow(workflow) from None


def get_workflow(name: str | None = None) -> dict[str, Any]:
    """The validated configuration of a declared workflow (a fresh copy, ready
    for ``update_configuration``); ``None`` means ``TRIGGERS['DEFAULT_WORKFLOW']``."""
    if name is None:
        name = conf.get("DEFAULT_WORKFLOW")
        if not name:
            raise ConfigurationError(
                "no workflow named and TRIGGERS['DEFAULT_WORKFLOW'] is not set",
                directive="DEFAULT_WORKFLOW",
            )
    workflows = configured_workflows()
    if name not in workflows:
        raise UnknownWorkflowError(name, sorted(str(k) for k in workflows))
    configuration = _load_source(workflows[name], name)
    validate_workflow(configuration, name)
    result: dict[str, Any] = configuration
    return result


def load_workflow(name: str | None = None) -> dict[str, TaskConfig]:
    """A declared workflow as :class:`~triggers.types.TaskConfig` objects."""
    return validate_workflow(get_workflow(name), name)


# -- reporting every problem at once (system checks, triggers_validate) -------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow.

    ``kind`` is ``'file'`` (unreadable or not a JSON object), ``'shape'`` (not a
    configuration at all), ``'directive'`` (a malformed directive), ``'using'``
    (unknown runner), ``'run'`` (no registered ``TriggerTask`` of that name),
    ``'run-unverified'`` (a bare task name this process cannot look up) or
    ``'cycle'`` (tasks waiting on each other's cascades).
    """

    kind: str
    message: str
    workflow: str | None = None
    task: str | None = None
    directive: str | None = None
    suggestion: str | None = None

    @property
    def is_error(self) -> bool:
        return self.kind != "run-unverified"

    @property
    def hint(self) -> str | None:
        if self.suggestion:
            return f"Did you mean {self.suggestion!r}?"
        return _HINTS.get(self.kind)

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "level": "error" if self.is_error else "warning",
            "message": self.message,
            "workflow": self.workflow,
            "task": self.task,
            "directive": self.directive,
            "suggestion": self.suggestion,
            "hint": self.hint,
        }


_HINTS = {
    "file": "Check the path (relative paths start at TRIGGERS['WORKFLOWS_DIR'] or BASE_DIR) "
    "and that the file holds one JSON object.",
    "shape": "A workflow maps task names to directives, or is the path of a .json file.",
    "directive": "See the configuration reference: after, run, andEvery, unless, "
    "withParams, using, if (docs/conditions.rst); groups in after/unless are "
    '{"anyOf": [names]} or {"atLeast": k, "of": [names]} (docs/groups.rst).',
    "using": "Use a registered task runner ('celery', 'threading') or register yours "
    "under the 'triggers.runners' entry point group.",
    "run": "'run' must name a Celery task that subclasses triggers.task.TriggerTask, "
    "usually its dotted path; make sure its module is importable.",
    "run-unverified": "Give the task's dotted path so it can be imported and checked, or "
    "make sure the Celery app has imported its task modules before the checks run.",
    "cycle": "Break the cycle: a task cannot (even indirectly) wait for its own cascade.",
}


def _problem(kind: str, exc: ConfigurationError, workflow: str | None) -> Problem:
    error = exc if exc.workflow is not None or workflow is None else exc.in_workflow(workflow)
    return Problem(
        kind=kind,
        message=str(error),
        workflow=workflow,
        task=exc.task,
        directive=exc.directive,
        suggestion=exc.suggestion,
    )


def check_run_target(run: str, task: str | None = None) -> tuple[str, str] | None:
    """``None`` if ``run`` names a registered ``TriggerTask`` (importing its
    module if needed), else ``(kind, message)``."""
    from .runners.base import BaseTaskRunner

    try:
        BaseTaskRunner.resolve(run, task)
    except ConfigurationError as exc:
        if "." not in run and "not a TriggerTask" not in exc.message:
            return "run-unverified", exc.message
        return "run", exc.message
    return None


def find_problems(
    source: Any, workflow: str | None = None, *, check_tasks: bool = True
) -> list[Problem]:
    """Every problem of one workflow (an inline configuration or a file path),
    instead of only the first one ``validate_configuration`` raises."""
    try:
        configuration = _load_source(source, workflow)
    except WorkflowFileError as exc:
        return [Problem("file", str(exc), workflow=workflow)]
    except ConfigurationError as exc:
        return [Problem("shape", str(exc), workflow=workflow)]

    configs, checked = check_configuration(configuration)
    problems = [_problem(p.kind, p.error, workflow) for p in checked]
    if check_tasks:
        for name, config in configs.items():
            found = check_run_target(config.run, name)
            if found is not None:
                kind, message = found
                error = ConfigurationError(message, task=name, directive="run", workflow=workflow)
                problems.append(
                    Problem(kind, str(error), workflow=workflow, task=name, directive="run")
                )
    return problems
