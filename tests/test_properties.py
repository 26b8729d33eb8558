"""Order independence and exactly-once scheduling, as properties: random valid
workflows (after, andEvery, unless, cascades, anyOf/atLeast groups, ``if``
conditions) and random fire sequences end in the statuses a small
sequential reference model (tests/property_model.py) predicts, whatever the
order and however many threads or processes fire; no instance is ever
scheduled twice."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.managers import init_spawned_process
from tests.property_model import (
    Fire,
    fire_sequences,
    kwarg_fires,
    model_statuses,
    order_matters,
    split,
    workflows,
)
from triggers.manager import TriggerManager
from triggers.runners import task_runners
from triggers.runners.base import BaseTaskRunner, build_message, force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.testing import DevNullTask

__all__ = ["fire_sequences", "model_statuses", "workflows"]  # also used by test_engine
#: Storage backends every property is checked on: Redis through the cache
#: backend, and the database backend on the run's PostgreSQL database.
BACKENDS = ["cache", "database"]
with_each_backend = pytest.mark.parametrize("backend", BACKENDS)


def storage_for(backend: str, uid: str) -> BaseTriggerStorage:
    if backend == "database":
        return DatabaseStorageBackend(uid, database="postgres")
    return CacheStorageBackend(uid)


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- runners that count every dispatch ------------------------------------------

_dispatch_lock = threading.Lock()
DISPATCHED: Counter[tuple[str, str]] = Counter()


def _count(manager: TriggerManager, name: str) -> None:
    with _dispatch_lock:
        DISPATCHED[(manager.storage.uid, name)] += 1


class QueueRunner(BaseTaskRunner):
    """Queues each dispatch; :meth:`drain` then runs them one by one in this
    thread (claim, run, finish + cascade), first in first out, like the
    reference model."""

    name = "prop-queue"
    queue: deque[tuple[Any, dict[str, Any]]] = deque()

    def run(self, manager: TriggerManager, task_instance: Any) -> None:
        _count(manager, task_instance.name)
        task = self.resolve(task_instance.config.run, task_instance.config.name)
        self.queue.append((task, build_message(manager, task_instance)))

    @classmethod
    def drain(cls) -> None:
        while cls.queue:
            task, message = cls.queue.popleft()
            task.execute_message(message)


class CountingThreadRunner(ThreadingTaskRunner):
    name = "prop-threads"

    def run(self, manager: TriggerManager, task_instance: Any) -> None:
        _count(manager, task_instance.name)
        super().run(manager, task_instance)


task_runners.register("prop-queue", QueueRunner)
task_runners.register("prop-threads", CountingThreadRunner)


@contextmanager
def using_runner(key: str) -> Iterator[None]:
    """Run every task on runner ``key`` for the block."""
    previous = force_runner(key)
    try:
        yield
    finally:
        ThreadingTaskRunner.join_all()
        QueueRunner.queue.clear()
        force_runner(previous)


def new_session(configuration: dict[str, Any], backend: str = "cache") -> TriggerManager:
    manager = TriggerManager(storage_for(backend, f"prop-{uuid.uuid4().hex}"))
    manager.update_configuration(configuration)
    return manager


def statuses(manager: TriggerManager) -> dict[str, str]:
    return {name: inst.status for name, inst in manager.storage.instances.items()}


def assert_scheduled_once(manager: TriggerManager) -> None:
    uid = manager.storage.uid
    with _dispatch_lock:
        mine = {name: n for (u, name), n in DISPATCHED.items() if u == uid}
    assert all(n == 1 for n in mine.values()), f"scheduled more than once: {mine}"
    ran = {n for n, s in statuses(manager).items() if s == "finished"}
    assert ran == set(mine), "every finished instance was dispatched exactly once"


# -- the properties ------------------------------------------------------------------


@with_each_backend
@PROPERTY_SETTINGS
@given(configuration=workflows(), fires=fire_sequences, data=st.data())
def test_fires_in_any_order_end_as_the_reference_model_predicts(
    backend: str, configuration: dict[str, Any], fires: list[str], data: Any
) -> None:
    with using_runner("prop-queue"):
        check_any_order(configuration, fires, data, backend)


@with_each_backend
@PROPERTY_SETTINGS
@given(configuration=workflows(with_conditions=True), fires=kwarg_fires, data=st.data())
def test_conditions_in_any_order_end_as_the_reference_model_predicts(
    backend: str, configuration: dict[str, Any], fires: list[Fire], data: Any
) -> None:
    with using_runner("prop-queue"):
        check_any_order(configuration, fires, data, backend)


def check_any_order(
    configuration: dict[str, Any], fires: list[Any], data: Any, backend: str = "cache"
) -> None:
    # Given a random workflow and a random order of the same fires
    order = data.draw(st.permutations(fires), label="order")
    manager = new_session(configuration, backend)

    # When they fire one after another (each one's tasks and cascades run
    # before the next fire)
    for fire in order:
        manager.fire(*split(fire))
        QueueRunner.drain()

    # Then the statuses are those of the model for that order, and nothing
    # was scheduled twice
    assert statuses(manager) == model_statuses(configuration, order)
    assert_scheduled_once(manager)
    if not order_matters(configuration):
        # Without `unless` (which is about order by definition) and `if`
        # (a new instance is seeded with the latest kwargs) the order does
        # not matter at all.
        assert model_statuses(configuration, order) == model_statuses(configuration, fires)


@with_each_backend
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configuration=workflows(with_unless=False), fires=fire_sequences)
def test_fires_from_several_threads_at_once_end_as_the_model_predicts(
    backend: str, configuration: dict[str, Any], fires: list[str]
) -> None:
    with using_runner("prop-threads"):
        check_threads(configuration, fires, backend)


def check_threads(configuration: dict[str, Any], fires: list[str], backend: str = "cache") -> None:
    uid = new_session(configuration, backend).storage.uid
    # Given the fires dealt out to three threads, each with its own manager
    # and storage object (as three web processes would have), and tasks
    # (and their cascades) running in threads of their own
    shares = [fires[i::3] for i in range(3)]
    barrier = threading.Barrier(3)

    def fire_all(share: list[str]) -> None:
        manager = TriggerManager(storage_for(backend, uid))
        barrier.wait()
        for trigger in share:
            manager.fire(trigger)

    # When they fire at once
    threads = [threading.Thread(target=fire_all, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ThreadingTaskRunner.join_all()

    # Then the session ends as the sequential model says, each instance
    # scheduled once
    manager = TriggerManager(storage_for(backend, uid))
    assert statuses(manager) == model_statuses(configuration, fires)
    assert_scheduled_once(manager)


# -- the same from several processes ---------------------------------------------

PROCESS_WORKFLOW = {
    "t_page": {"after": ["e0"], "andEvery": "e0", "run": DevNullTask.name},
    "t_both": {"after": ["e1", "e2"], "run": DevNullTask.name},
    "t_each": {"after": ["t_page", "t_both"], "andEvery": "t_page", "run": DevNullTask.name},
    "t_last": {"after": ["t_both", "e3"], "run": DevNullTask.name},
    # Once per e1 that carries n > 1 (an e1 without n fails to evaluate:
    # false), after any of e2, e3.
    "t_big": {
        "after": [{"anyOf": ["e2", "e3"]}],
        "andEvery": "e1",
        "if": {"e1": "kwargs.n > 1"},
        "run": DevNullTask.name,
    },
}


def _fire_in_child(uid: str, share: list[Fire], barrier: Any, backend: str) -> dict[str, int]:
    force_runner("prop-threads")
    manager = TriggerManager(storage_for(backend, uid))
    barrier.wait()
    for fire in share:
        manager.fire(*split(fire))
    ThreadingTaskRunner.join_all()
    with _dispatch_lock:
        return {name: n for (u, name), n in DISPATCHED.items() if u == uid}


@with_each_backend
def test_fires_from_several_processes_at_once_end_as_the_model_predicts(backend: str) -> None:
    # Given a workflow with andEvery and cascades, and 40 fires dealt out to
    # three processes
    manager = new_session(PROCESS_WORKFLOW, backend)
    uid = manager.storage.uid
    fires: list[Fire] = ["e0", ("e1", {"n": 2}), "e0", "e2", "e3", "e0", "e1", "e0"] * 5
    shares = [fires[i::3] for i in range(3)]
    # Spawned, not forked: this process has threads (the lock renewer, task
    # threads), and forking a threaded process may deadlock the child.
    context = multiprocessing.get_context("spawn")

    # When they fire at once (tasks run in threads of the firing processes)
    with (
        context.Manager() as shared,
        context.Pool(3, initializer=init_spawned_process) as pool,
    ):
        barrier = shared.Barrier(3)
        results = pool.starmap(_fire_in_child, [(uid, share, barrier, backend) for share in shares])

    # Then the session ends as the model predicts, every instance scheduled
    # exactly once across all processes
    expected = model_statuses(PROCESS_WORKFLOW, fires)
    assert statuses(manager) == expected
    assert Counter(expected.values())["finished"] == 20 + 1 + 20 + 1 + 5
    dispatched: Counter[str] = Counter()
    for result in results:
        dispatched.update(result)
    assert set(dispatched.values()) == {1}
    assert set(dispatched) == set(expected)
