"""Concurrent fires from several OS processes, and reads that are never stale.

Fires come from ``spawn``-ed processes (each sets up Django itself, like a
web server process would) and tasks run on the real Celery worker.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from tests.managers import (
    deliveries_key,
    init_spawned_process,
    read_events,
    runs_key,
    start_together,
)
from tests.tasks import RecordingTask
from tests.utils import wait_for
from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.types import TaskInstance

PROCESSES = 4
#: The exactly-once tests run on Redis (cache backend) and on the database
#: backend (the run's PostgreSQL database).
BACKENDS = ["cache", "database"]


def storage_for(backend: str, uid: str) -> BaseTriggerStorage:
    if backend == "database":
        return DatabaseStorageBackend(uid, database="postgres")
    return CacheStorageBackend(uid)


# -- runs in the spawned processes -------------------------------------------


def _fire_batch(
    uid: str, fires: list[tuple[str, dict[str, Any]]], backend: str = "cache"
) -> dict[str, Any]:
    """Fire ``fires`` in order on session ``uid``, starting together with the
    other processes; report what each fire scheduled."""
    manager = TriggerManager(storage_for(backend, uid))
    start_together()
    started = time.time()
    scheduled: list[str] = []
    for trigger, kwargs in fires:
        scheduled += [inst.name for inst in manager.fire(trigger, kwargs)]
    return {"pid": os.getpid(), "scheduled": scheduled, "started": started, "ended": time.time()}


# -- fixtures and helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """``PROCESSES`` spawned processes with Django set up, reused by the tests."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    with ProcessPoolExecutor(
        PROCESSES, mp_context=context, initializer=init_spawned_process, initargs=(barrier,)
    ) as pool:
        yield pool


def fire_from_processes(
    pool: ProcessPoolExecutor,
    uid: str,
    fires: list[tuple[str, dict[str, Any]]],
    backend: str = "cache",
) -> list[dict[str, Any]]:
    """Deal ``fires`` round-robin to the processes and fire them all at once."""
    batches = [fires[i::PROCESSES] for i in range(PROCESSES)]
    futures = [pool.submit(_fire_batch, uid, batch, backend) for batch in batches]
    reports = [future.result(timeout=90) for future in futures]
    # Each batch ran in its own process (a batch cannot end before the others
    # reached the barrier), and the batches overlapped in time.
    assert len({r["pid"] for r in reports}) == PROCESSES
    assert os.getpid() not in {r["pid"] for r in reports}
    assert max(r["started"] for r in reports) < min(r["ended"] for r in reports)
    return reports


def statuses(storage: BaseTriggerStorage) -> dict[str, str]:
    return {name: inst.status for name, inst in storage.instances.items()}


def stamp(inst: TaskInstance, status: str) -> float:
    return datetime.fromisoformat(inst.metadata["timestamps"][status]).timestamp()


# -- exactly-once scheduling under concurrent fires -----------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_200_triggers_fired_from_4_processes_run_the_waiting_task_once(
    celery_worker, process_pool, unique_uid, backend
):
    # Given a task that waits for 200 distinct triggers
    triggers = [f"part{n:03d}" for n in range(200)]
    manager = TriggerManager(storage_for(backend, unique_uid))
    manager.update_configuration({"t_all": {"after": triggers, "run": RecordingTask.name}})

    # When 4 processes fire 50 of them each, at the same time
    fires = [(trigger, {"n": n}) for n, trigger in enumerate(triggers)]
    reports = fire_from_processes(process_pool, unique_uid, fires, backend)

    # Then exactly one fire (the last to commit) scheduled the one instance
    assert sorted(name for r in reports for name in r["scheduled"]) == ["t_all#0"]
    # ... the worker runs it exactly once, with every trigger's kwargs
    runs = wait_for(lambda: read_events(runs_key(unique_uid)), timeout=20, message="t_all ran")
    wait_for(
        lambda: read_events(deliveries_key(unique_uid), event="postrun"),
        message="the worker finished the message",
    )
    assert [r["instance"] for r in runs] == ["t_all#0"]
    assert len(read_events(deliveries_key(unique_uid), event="prerun")) == 1
    expected = {trigger: {"n": n} for n, trigger in enumerate(triggers)}
    assert runs[0]["kwargs"] == expected
    # ... and no trigger was lost from the session's state
    storage = manager.storage
    assert [i.name for i in storage] == ["t_all#0"]
    assert storage["t_all#0"].status == TaskInstance.STATUS_FINISHED
    assert storage["t_all#0"].kwargs == expected
    assert {t: v for t, v in storage.latest_kwargs.items() if t in expected} == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_and_every_fires_from_4_processes_make_one_instance_each(
    celery_worker, process_pool, unique_uid, backend
):
    # Given a task that runs once per 'tick', and one that runs once per
    # cascade of the first (fired by the worker while the processes fire)
    manager = TriggerManager(storage_for(backend, unique_uid))
    manager.update_configuration(
        {
            "t_each": {"after": ["tick"], "andEvery": "tick", "run": RecordingTask.name},
            "t_then": {"after": ["t_each"], "andEvery": "t_each", "run": RecordingTask.name},
        }
    )
    fires_total = 48

    # When 4 processes fire 'tick' 12 times each, at the same time
    reports = fire_from_processes(
        process_pool, unique_uid, [("tick", {"n": n}) for n in range(fires_total)], backend
    )

    # Then every fire scheduled its own new instance, none twice
    each_names = [f"t_each#{n}" for n in range(fires_total)]
    then_names = [f"t_then#{n}" for n in range(fires_total)]
    scheduled = [name for r in reports for name in r["scheduled"]]
    assert sorted(scheduled, key=lambda n: int(n.split("#")[1])) == each_names
    # ... the worker runs each of them, and each cascade's instance, exactly once
    wait_for(
        lambda: len(read_events(deliveries_key(unique_uid), event="postrun")) >= 2 * fires_total,
        timeout=30,
        message=f"{2 * fires_total} messages processed",
    )
    runs = read_events(runs_key(unique_uid))
    assert sorted(r["instance"] for r in runs) == sorted(each_names + then_names)
    # ... and each fire's kwargs went to exactly one instance, and each
    # cascade's to exactly one downstream instance
    ticks = [r["kwargs"]["tick"]["n"] for r in runs if r["instance"].startswith("t_each#")]
    assert sorted(ticks) == list(range(fires_total))
    cascades = [r["kwargs"]["t_each"] for r in runs if r["instance"].startswith("t_then#")]
    assert sorted(c["instance"] for c in cascades) == sorted(each_names)
    assert statuses(manager.storage) == {
        name: TaskInstance.STATUS_FINISHED for name in each_names + then_names
    }


# -- no stale reads ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_manager_made_before_the_worker_ran_sees_what_the_worker_did(
    celery_worker, unique_uid, backend
):
    # Given a manager and storage object created, and read, before tasks ran
    manager = TriggerManager(storage_for(backend, unique_uid))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": RecordingTask.name},
            "t_second": {"after": ["t_first"], "run": RecordingTask.name},
        }
    )
    manager.fire("start", {"page": 1})
    assert manager.storage.get_unresolved_tasks() != []

    # When the worker runs the workflow (watched through a fresh object)
    wait_for(
        lambda: (
            statuses(storage_for(backend, unique_uid)).get("t_second#0")
            == TaskInstance.STATUS_FINISHED
        ),
        timeout=20,
        message="t_second#0 finished",
    )

    # Then the old objects show the current state, not what they read before
    storage = manager.storage
    assert statuses(storage) == {
        "t_first#0": TaskInstance.STATUS_FINISHED,
        "t_second#0": TaskInstance.STATUS_FINISHED,
    }
    assert storage["t_second#0"].metadata["result"] == {"instance": "t_second#0"}
    assert set(storage.latest_kwargs) == {"start", "t_first", "t_second"}
    assert storage.get_unresolved_tasks() == []
    assert storage.get_unresolved_instances() == []


def test_a_manager_used_after_join_all_sees_the_threads_work(unique_uid):
    # Given a manager whose tasks run in threads of this process
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": RecordingTask.name, "using": "threading"},
            "t_second": {"after": ["t_first"], "run": RecordingTask.name, "using": "threading"},
        }
    )
    scheduled = manager.fire("start")
    assert [i.name for i in scheduled] == ["t_first#0"]
    assert "t_first#0" in statuses(manager.storage)

    # When every thread (cascades included) has ended
    ThreadingTaskRunner.join_all(timeout=20)

    # Then the same manager sees both instances finished
    assert statuses(manager.storage) == {
        "t_first#0": TaskInstance.STATUS_FINISHED,
        "t_second#0": TaskInstance.STATUS_FINISHED,
    }
    assert [r["instance"] for r in read_events(runs_key(unique_uid))] == [
        "t_first#0",
        "t_second#0",
    ]


def test_a_late_scheduled_never_overwrites_a_fast_worker(celery_worker, unique_uid):
    # Given instant tasks, some of them dispatched by a runner that keeps the
    # fire open until a worker process has started on the message
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_fast": {"after": ["tick"], "andEvery": "tick", "run": RecordingTask.name},
            "t_held": {
                "after": ["hold"],
                "andEvery": "hold",
                "run": RecordingTask.name,
                "using": "wait-for-worker",
            },
        }
    )

    # When many instances are scheduled and finish as fast as the worker can
    # (the held ones first, one at a time: a held fire waits for a free
    # worker process, so none may be blocked on this session's lock)
    for n in range(3):
        manager.fire("hold", {"n": n})
        held = f"t_held#{n}"
        wait_for(
            partial(read_events, deliveries_key(unique_uid), event="postrun", instance=held),
            message=f"{held} processed",
        )
    for n in range(30):
        manager.fire("tick", {"n": n})
    total = 33

    # Then, once the worker has processed every message, each instance ran
    # once and ended finished: none is left 'scheduled' (or 'running')
    wait_for(
        lambda: len(read_events(deliveries_key(unique_uid), event="postrun")) >= total,
        timeout=30,
        message=f"{total} messages processed",
    )
    instances = manager.storage.instances
    assert len(read_events(runs_key(unique_uid))) == total
    assert {i.status for i in instances.values()} == {TaskInstance.STATUS_FINISHED}, {
        name: inst.status for name, inst in instances.items()
    }
    # ... its statuses were stamped in order ...
    for inst in instances.values():
        assert stamp(inst, "scheduled") <= stamp(inst, "running") <= stamp(inst, "finished")
    # ... although for the held ones the worker had started before the fire
    # that scheduled them wrote 'scheduled'
    for name in ("t_held#0", "t_held#1", "t_held#2"):
        (prerun,) = read_events(deliveries_key(unique_uid), event="prerun", instance=name)
        assert prerun["at"] < stamp(instances[name], "scheduled")
