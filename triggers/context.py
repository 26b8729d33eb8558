"""What a trigger task's ``_run`` receives: :class:`TaskContext` (the
instance, its trigger kwargs with ``withParams`` merged in, a logger that
records the highest level logged on the instance). Importable from
:mod:`triggers.task` as ever."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .exceptions import KwargsValidationError, RetryRequested, SkipRequested, TriggersError
from .manager import TriggerManager
from .types import TaskInstance

if TYPE_CHECKING:
    from .task import TriggerTask

__all__ = ["TaskContext", "deep_merge"]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively; override wins."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _InstanceLogger(logging.LoggerAdapter):
    """A logger that attaches the block's context to every record and keeps
    the highest level logged for the instance."""

    def __init__(self, base: logging.Logger, context: dict[str, Any], owner: TaskContext) -> None:
        super().__init__(base, {})
        self.context = context
        self.owner = owner

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        context = dict(self.context)
        context.update(extra.get("context") or {})
        extra["context"] = context
        extra.setdefault("triggers_session", self.owner.manager.storage.uid)
        extra.setdefault("triggers_instance", self.owner.instance_name)
        kwargs["extra"] = extra
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.owner._note_level(level)
        super().log(level, msg, *args, **kwargs)


class TaskContext:
    """What a running task knows about itself and its session."""

    def __init__(
        self, manager: TriggerManager, task_instance: TaskInstance, task: TriggerTask
    ) -> None:
        self.manager = manager
        self.task_instance = task_instance
        self.instance_name = task_instance.name
        self.task = task
        self.log_level = logging.NOTSET
        self._logger = logging.getLogger(task.name or type(task).__module__)
        #: Trigger kwargs keyed by trigger, with ``withParams`` merged under them
        #: (not for group members that did not fire: only those that did are keys).
        config, received = task_instance.config, task_instance.kwargs
        params = config.with_params
        if config.after_rule.groups:
            unfired = config.after_rule.names - config.after_rule.plain - set(received)
            params = {t: p for t, p in params.items() if t not in unfired}
        self.trigger_kwargs: dict[str, Any] = deep_merge(params, received)

    def _note_level(self, level: int) -> None:
        self.log_level = max(self.log_level, level)

    @contextmanager
    def get_logger_context(
        self, context: Mapping[str, Any] | None = None
    ) -> Iterator[_InstanceLogger]:
        """Yield a logger for this instance; ``context`` is attached to every
        message (``extra={'context': {...}}`` adds per message). An exception
        leaving the block is logged with its ``with_context`` context."""
        adapter = _InstanceLogger(self._logger, dict(context or {}), self)
        try:
            yield adapter
        except (RetryRequested, SkipRequested):
            raise
        except Exception as exc:
            adapter.error(
                "%s: %s",
                type(exc).__name__,
                exc,
                exc_info=True,
                extra={"context": dict(getattr(exc, "context", None) or {})},
            )
            exc._triggers_logged = True  # type: ignore[attr-defined]
            raise

    def filter_kwargs(self, filters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Validate and convert trigger kwargs with the Filters library
        (``{trigger: {kwarg: filter}}``); invalid input fails the instance
        with the filters' messages. Needs ``pip install triggers[filters]``."""
        try:
            import filters as f
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise TriggersError(
                "context.filter_kwargs needs the Filters library: pip install 'triggers[filters]'"
            ) from exc
        mapper = f.FilterMapper(
            {trigger: f.FilterMapper(dict(spec)) for trigger, spec in filters.items()},
            allow_extra_keys=True,
            allow_missing_keys=False,
        )
        runner = f.FilterRunner(mapper, self.trigger_kwargs)
        if not runner.is_valid():
            raise KwargsValidationError(self.instance_name, runner.errors)
        return dict(runner.cleaned_data)
