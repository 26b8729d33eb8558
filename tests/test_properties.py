"""Order independence and exactly-once scheduling, as properties: random valid
workflows (after, andEvery, unless, cascades) and random fire sequences end
in the statuses a small sequential reference model predicts, whatever the
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
from triggers.manager import TriggerManager
from triggers.runners import task_runners
from triggers.runners.base import BaseTaskRunner, build_message, force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.testing import DevNullTask

EXTERNAL = ["e0", "e1", "e2", "e3"]
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


# -- the reference model ---------------------------------------------------------


def _number(name: str) -> int:
    return int(name.rpartition("#")[2])


class Model:
    """SPEC section 3, sequentially: each fire applies to the tasks that
    mention the trigger (in name order); ready instances run first in, first
    out, and each finished one fires its task's name (the cascade)."""

    def __init__(self, configuration: dict[str, dict[str, Any]]) -> None:
        self.tasks: dict[str, tuple[set[str], str | None, set[str]]] = {}
        for name, directives in configuration.items():
            every = directives.get("andEvery")
            after = set(directives["after"]) | ({every} if every else set())
            self.tasks[name] = (after, every, set(directives.get("unless", ())))
        self.fired: set[str] = set()
        self.instances: dict[str, dict[str, Any]] = {}
        self.queue: deque[str] = deque()

    def _create(self, task: str) -> str:
        after, _, unless = self.tasks[task]
        name = f"{task}#{sum(1 for i in self.instances.values() if i['task'] == task)}"
        self.instances[name] = {
            "task": task,
            "got": after & self.fired,
            "unless_got": unless & self.fired,
            "status": "unstarted",
        }
        return name

    def _waits_for(self, name: str, trigger: str) -> bool:
        inst = self.instances[name]
        after, _, unless = self.tasks[inst["task"]]
        return inst["status"] == "unstarted" and (
            (trigger in after and trigger not in inst["got"])
            or (trigger in unless and trigger not in inst["unless_got"])
        )

    def _apply(self, trigger: str) -> None:
        ready = []
        for task in sorted(self.tasks):
            after, every, unless = self.tasks[task]
            if trigger not in after and trigger not in unless:
                continue
            mine = sorted((n for n, i in self.instances.items() if i["task"] == task), key=_number)
            if not mine:
                candidates = [self._create(task)]
            else:
                candidates = [n for n in mine if self._waits_for(n, trigger)]
                if not candidates and trigger == every:
                    candidates = [self._create(task)]
            for name in candidates:
                inst = self.instances[name]
                if trigger in after:
                    inst["got"].add(trigger)
                if trigger in unless:
                    inst["unless_got"].add(trigger)
                if unless and unless <= inst["unless_got"]:
                    inst["status"] = "abandoned"
                elif after <= inst["got"]:
                    ready.append(name)
        self.fired.add(trigger)
        for name in ready:
            self.instances[name]["status"] = "scheduled"
            self.queue.append(name)

    def fire(self, trigger: str) -> None:
        self._apply(trigger)
        while self.queue:
            name = self.queue.popleft()
            self.instances[name]["status"] = "finished"
            self._apply(self.instances[name]["task"])

    def statuses(self) -> dict[str, str]:
        return {n: i["status"] for n, i in self.instances.items()}


def model_statuses(configuration: dict[str, Any], fires: list[str]) -> dict[str, str]:
    model = Model(configuration)
    for trigger in fires:
        model.fire(trigger)
    return model.statuses()


# -- strategies --------------------------------------------------------------------


@st.composite
def workflows(draw: Any, with_unless: bool = True) -> dict[str, dict[str, Any]]:
    """Tasks t0..tn; each waits on external triggers and/or the cascades of
    earlier tasks, so every workflow is acyclic and valid."""
    configuration: dict[str, dict[str, Any]] = {}
    for i in range(draw(st.integers(1, 5))):
        pool = EXTERNAL + [f"t{j}" for j in range(i)]
        after = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        directives: dict[str, Any] = {"after": after, "run": DevNullTask.name}
        if draw(st.booleans()):
            directives["andEvery"] = draw(st.sampled_from(pool))
        if with_unless and draw(st.integers(0, 3)) == 0:
            directives["unless"] = draw(
                st.lists(st.sampled_from(EXTERNAL), min_size=1, max_size=2, unique=True)
            )
        configuration[f"t{i}"] = directives
    return configuration


fire_sequences = st.lists(st.sampled_from(EXTERNAL), min_size=1, max_size=8)


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


def check_any_order(
    configuration: dict[str, Any], fires: list[str], data: Any, backend: str = "cache"
) -> None:
    # Given a random workflow and a random order of the same fires
    order = data.draw(st.permutations(fires), label="order")
    manager = new_session(configuration, backend)

    # When they fire one after another (each one's tasks and cascades run
    # before the next fire)
    for trigger in order:
        manager.fire(trigger)
        QueueRunner.drain()

    # Then the statuses are those of the model for that order, and nothing
    # was scheduled twice
    assert statuses(manager) == model_statuses(configuration, order)
    assert_scheduled_once(manager)
    if not any("unless" in d for d in configuration.values()):
        # Without `unless` (which is about order by definition) the order
        # does not matter at all.
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
}


def _fire_in_child(uid: str, share: list[str], barrier: Any, backend: str) -> dict[str, int]:
    force_runner("prop-threads")
    manager = TriggerManager(storage_for(backend, uid))
    barrier.wait()
    for trigger in share:
        manager.fire(trigger)
    ThreadingTaskRunner.join_all()
    with _dispatch_lock:
        return {name: n for (u, name), n in DISPATCHED.items() if u == uid}


@with_each_backend
def test_fires_from_several_processes_at_once_end_as_the_model_predicts(backend: str) -> None:
    # Given a workflow with andEvery and cascades, and 40 fires dealt out to
    # three processes
    manager = new_session(PROCESS_WORKFLOW, backend)
    uid = manager.storage.uid
    fires = ["e0", "e1", "e0", "e2", "e3", "e0", "e1", "e0"] * 5
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
        results = pool.starmap(
            _fire_in_child, [(uid, share, barrier, backend) for share in shares]
        )

    # Then the session ends as the model predicts, every instance scheduled
    # exactly once across all processes
    expected = model_statuses(PROCESS_WORKFLOW, fires)
    assert statuses(manager) == expected
    assert Counter(expected.values())["finished"] == 20 + 1 + 20 + 1
    dispatched: Counter[str] = Counter()
    for result in results:
        dispatched.update(result)
    assert set(dispatched.values()) == {1}
    assert set(dispatched) == set(expected)
