"""Trigger tasks for the test suite; the worker imports this module
(``CELERY_IMPORTS``), and with it :mod:`tests.managers`.

Every task body appends one entry to ``runs_key(uid)`` when it runs, so tests
count executions from Redis whichever process ran them.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

from celery import signals

import tests.fault_tasks  # noqa: F401  (fault-test tasks must exist in the worker)
from tests.managers import (
    deliveries_key,
    read_events,
    record_event,
    redis_client,
    release_key,
    runs_key,
)
from triggers.task import TaskContext, TriggerTask

__all__ = ["NonJsonResultTask", "RecordingTask", "SlowTask", "read_events", "runs_key"]


def _record_run(context: TaskContext, **extra: Any) -> None:
    storage = context.manager.storage
    record_event(
        runs_key(storage.uid),
        instance=context.instance_name,
        manager=f"{type(context.manager).__module__}.{type(context.manager).__qualname__}",
        storage=f"{type(storage).__module__}.{type(storage).__qualname__}",
        storage_kwargs=storage.get_init_kwargs(),
        kwargs=context.trigger_kwargs,
        **extra,
    )


class RecordingTask(TriggerTask):
    """Records each execution; finishes with ``{'instance': <its name>}``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        _record_run(context)
        return {"instance": context.instance_name}


class SlowTask(TriggerTask):
    """Records that it started, then finishes only once ``release_key(uid)``
    is set (fails after ``trigger_kwargs['wait']['timeout']`` s, default 30)."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        uid = context.manager.storage.uid
        _record_run(context, phase="started")
        timeout = float((context.trigger_kwargs.get("wait") or {}).get("timeout", 30))
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not redis_client().exists(release_key(uid)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{context.instance_name} was not released within {timeout}s")
            pause.wait(0.01)
        _record_run(context, phase="released")
        return {"instance": context.instance_name}


class NonJsonResultTask(TriggerTask):
    """Returns a mapping that JSON cannot hold (a datetime)."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        _record_run(context)
        return {"when": datetime.datetime.now(datetime.UTC)}


# Every delivery of a trigger-task message to a worker process, with the
# Celery task id, so tests can see duplicates arrive and end.


def _record_delivery(event: str, task_id: str, task: Any, kwargs: Any, **extra: Any) -> None:
    if isinstance(task, TriggerTask) and isinstance(kwargs, dict) and "uid" in kwargs:
        record_event(
            deliveries_key(kwargs["uid"]),
            event=event,
            task_id=task_id,
            instance=kwargs.get("instance"),
            **extra,
        )


@signals.task_prerun.connect
def _record_prerun(task_id: str = "", task: Any = None, kwargs: Any = None, **_: Any) -> None:
    _record_delivery("prerun", task_id, task, kwargs)


@signals.task_postrun.connect
def _record_postrun(
    task_id: str = "", task: Any = None, kwargs: Any = None, state: Any = None, **_: Any
) -> None:
    _record_delivery("postrun", task_id, task, kwargs, state=state)
