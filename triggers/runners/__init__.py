"""Task runners and their registry (entry point group ``triggers.runners``)."""

from __future__ import annotations

from ..registry import task_runners
from .base import DEFAULT_TASK_RUNNER, BaseTaskRunner

__all__ = [
    "DEFAULT_TASK_RUNNER",
    "BaseTaskRunner",
    "CeleryTaskRunner",
    "ThreadingTaskRunner",
    "task_runners",
]


def __getattr__(name: str) -> type[BaseTaskRunner]:  # lazy: importing Celery is not free
    if name == "CeleryTaskRunner":
        from .celery import CeleryTaskRunner

        return CeleryTaskRunner
    if name == "ThreadingTaskRunner":
        from .threading import ThreadingTaskRunner

        return ThreadingTaskRunner
    raise AttributeError(name)
