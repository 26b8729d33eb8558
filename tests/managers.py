"""Test-only extensions that must exist in the worker too (``tests.tasks``
imports this module, and the worker imports ``tests.tasks``).

- :class:`RecordingManager`, registered as ``'recording'``: its hooks append
  what they were called with to a Redis list, so a test can see hooks that
  ran inside a worker process.
- :class:`WaitForWorkerRunner`, registered as ``'wait-for-worker'``: publishes
  like the Celery runner, then keeps the fire (and so the session lock) open
  until a worker process has started on the message. That widens the window
  in which a late ``scheduled`` could overwrite the worker's ``running``.
- Helpers to record and read such events (Redis lists of JSON entries on the
  cache database), and to set up processes the tests ``spawn``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from triggers.manager import TriggerManager, trigger_managers
from triggers.runners import task_runners
from triggers.runners.base import build_message
from triggers.runners.celery import CeleryTaskRunner
from triggers.types import TaskInstance

if TYPE_CHECKING:
    from triggers.task import TriggerTask

#: Recorded lists outlive any test run by this much, then Redis drops them.
EVENT_TTL = 600

_clients: dict[int, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client on the cache database, one per process (safe after fork)."""
    client = _clients.get(os.getpid())
    if client is None:
        from django.conf import settings

        url = f"{settings.TRIGGERS_TEST_REDIS_URL}/{settings.REDIS_CACHE_DB}"
        client = _clients[os.getpid()] = redis.Redis.from_url(url)
    return client


def record_event(key: str, **entry: Any) -> None:
    """Append ``entry`` (plus the recording process's pid and the epoch time)
    to list ``key``."""
    entry.setdefault("pid", os.getpid())
    entry.setdefault("at", time.time())
    client = redis_client()
    client.rpush(key, json.dumps(entry))
    client.expire(key, EVENT_TTL)


def read_events(key: str, **match: Any) -> list[dict[str, Any]]:
    """Entries of list ``key`` whose fields equal ``match``."""
    entries = [json.loads(raw) for raw in redis_client().lrange(key, 0, -1)]
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def runs_key(uid: str) -> str:
    """Every execution of a test task's body in session ``uid``."""
    return f"triggers-tests:runs:{uid}"


def hooks_key(uid: str) -> str:
    """Every ``RecordingManager`` hook call in session ``uid``."""
    return f"triggers-tests:hooks:{uid}"


def deliveries_key(uid: str) -> str:
    """Celery ``task_prerun``/``task_postrun`` of messages for session ``uid``."""
    return f"triggers-tests:deliveries:{uid}"


def release_key(uid: str) -> str:
    """Set this key to let ``SlowTask`` instances of session ``uid`` finish."""
    return f"triggers-tests:release:{uid}"


# -- spawned processes (multiprocessing 'spawn' start method) -----------------

_start_barrier: Any = None


def init_spawned_process(barrier: Any = None) -> None:
    """Pool initialiser: set Django up like any other process of the project
    would, and keep ``barrier`` for :func:`start_together`."""
    global _start_barrier
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    _start_barrier = barrier


def start_together(timeout: float = 60.0) -> None:
    """Wait until every process sharing the initialiser's barrier is here."""
    _start_barrier.wait(timeout=timeout)


class RecordingManager(TriggerManager):
    """A custom manager whose hooks leave a trace in Redis."""

    name = "recording"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        record_event(
            hooks_key(self.storage.uid),
            hook="post_fire",
            trigger=trigger_name,
            scheduled=[i.name for i in tasks_scheduled],
            manager=type(self).__qualname__,
        )

    def _post_replay(self, task_instance: TaskInstance) -> None:
        record_event(hooks_key(self.storage.uid), hook="post_replay", instance=task_instance.name)

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        record_event(
            hooks_key(self.storage.uid),
            hook="post_skip",
            instance=task_instance.name,
            cascade=cascade,
        )


class UnregisteredManager(RecordingManager):
    """Registered under no key: a worker rebuilds it from its dotted path."""

    name = "unregistered"


class WaitForWorkerRunner(CeleryTaskRunner):
    """Celery runner that returns only once a worker has started the task
    (seen through the ``task_prerun`` record ``tests.tasks`` keeps)."""

    name = "wait-for-worker"
    #: Longest wait for the worker before the dispatch counts as failed.
    timeout = 15.0

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        task: TriggerTask = self.resolve(task_instance.config.run, task_instance.config.name)
        result = task.apply_async(kwargs=build_message(manager, task_instance))
        key = deliveries_key(manager.storage.uid)
        deadline = time.monotonic() + self.timeout
        pause = threading.Event()
        while not read_events(key, event="prerun", task_id=result.id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker started {task_instance.name} in {self.timeout}s")
            pause.wait(0.01)


trigger_managers.register(RecordingManager.name, RecordingManager)
task_runners.register(WaitForWorkerRunner.name, WaitForWorkerRunner)
