"""Task runners and their registry (entry point group ``triggers.runners``)."""

from __future__ import annotations

from ..registry import Registry
from .base import DEFAULT_TASK_RUNNER, BaseTaskRunner

__all__ = [
    "DEFAULT_TASK_RUNNER",
    "BaseTaskRunner",
    "CeleryTaskRunner",
    "ThreadingTaskRunner",
    "task_runners",
]

task_runners: Registry[BaseTaskRunner] = Registry(
    "triggers.runners",
    {
        "celery": "triggers.runners.celery.CeleryTaskRunner",
        "threading": "triggers.runners.threading.ThreadingTaskRunner",
    },
    base=BaseTaskRunner,
)


def __getattr__(name: str) -> type[BaseTaskRunner]:  # lazy: importing Celery is not free
    if name == "CeleryTaskRunner":
        from .celery import CeleryTaskRunner

        return CeleryTaskRunner
    if name == "ThreadingTaskRunner":
        from .threading import ThreadingTaskRunner

        return ThreadingTaskRunner
    raise AttributeError(name)
