"""What a real Celery worker guarantees: duplicate deliveries change nothing,
tasks run under the manager and storage that scheduled them, and eager mode
is refused rather than deadlocking."""

from __future__ import annotations

from typing import Any

import pytest

from tests.celery_app import app as celery_app
from tests.managers import (
    RecordingManager,
    UnregisteredManager,
    deliveries_key,
    hooks_key,
    read_events,
    release_key,
    runs_key,
)
from tests.tasks import RecordingTask, SlowTask
from tests.utils import wait_for
from triggers.exceptions import ConfigurationError, DispatchError, InstanceStateError
from triggers.manager import TriggerManager
from triggers.runners.base import BaseTaskRunner, build_message
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.redis import RedisStorageBackend
from triggers.types import TaskInstance


def deliveries(uid: str, **match: Any) -> list[dict[str, Any]]:
    return read_events(deliveries_key(uid), **match)


def test_a_message_delivered_twice_runs_finishes_and_cascades_once(
    celery_worker, redis_client, unique_uid
):
    # Given a slow task whose cascade creates a new downstream instance each
    # time it fires (so a second cascade would show)
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_slow": {"after": ["start"], "run": SlowTask.name},
            "t_next": {"after": ["t_slow"], "andEvery": "t_slow", "run": RecordingTask.name},
        }
    )
    (scheduled,) = manager.fire("start")
    message = build_message(manager, scheduled)
    task = BaseTaskRunner.resolve(SlowTask.name)
    wait_for(lambda: read_events(runs_key(unique_uid), phase="started"), message="t_slow started")
    (original,) = deliveries(unique_uid, event="prerun")
    task_id = original["task_id"]

    # When the broker delivers the same message again while the first run is
    # still running
    task.apply_async(kwargs=message, task_id=task_id)

    # Then the duplicate ends without running the body (it is put back until
    # the running worker's claim could have lapsed)
    wait_for(
        lambda: (
            deliveries(unique_uid, event="postrun", task_id=task_id)
            or len(read_events(runs_key(unique_uid), instance="t_slow#0")) > 1
        ),
        message="the duplicate delivery ended",
    )
    assert len(read_events(runs_key(unique_uid), instance="t_slow#0")) == 1
    assert manager.storage["t_slow#0"].status == TaskInstance.STATUS_RUNNING

    # When an operator also tries to re-send it, taking it for stuck, it is
    # refused while the running worker keeps its claim alive
    with pytest.raises(InstanceStateError, match="still holds it"):
        manager.resend_instance("t_slow#0")
    assert manager.storage["t_slow#0"].status == TaskInstance.STATUS_RUNNING

    # When the first run is let finish
    redis_client.set(release_key(unique_uid), 1, ex=600)

    # Then it finishes and cascades once
    wait_for(
        lambda: read_events(runs_key(unique_uid), instance="t_next#0"),
        message="the cascade ran t_next#0",
    )
    finished = manager.storage["t_slow#0"]
    assert finished.status == TaskInstance.STATUS_FINISHED
    finished_at = finished.metadata["timestamps"]["finished"]

    # When the same message is delivered once more, after the run finished
    task.apply_async(kwargs=message, task_id=task_id)

    # Then every delivery (the original, both duplicates and the one the first
    # duplicate put back) ends, and nothing ran or finished a second time
    wait_for(
        lambda: (
            len(deliveries(unique_uid, event="postrun", instance="t_slow#0")) == 4
            and len(deliveries(unique_uid, event="postrun")) == 5
        ),
        timeout=20,
        message="4 deliveries of t_slow#0 and 1 of t_next#0 ended",
    )
    assert [r["phase"] for r in read_events(runs_key(unique_uid), instance="t_slow#0")] == [
        "started",
        "released",
    ]
    slow = manager.storage["t_slow#0"]
    assert slow.status == TaskInstance.STATUS_FINISHED
    assert slow.metadata["timestamps"]["finished"] == finished_at
    assert slow.metadata["attempts"] == 1
    assert [i.name for i in manager.storage] == ["t_next#0", "t_slow#0"]
    assert len(read_events(runs_key(unique_uid), instance="t_next#0")) == 1
    assert manager.storage["t_next#0"].status == TaskInstance.STATUS_FINISHED


def test_a_worker_runs_cascades_with_the_registered_custom_manager(celery_worker, unique_uid):
    # Given a registered custom manager whose hooks leave a trace, and a
    # storage with non-default settings
    manager = RecordingManager(CacheStorageBackend(unique_uid, timeout=1234))
    manager.update_configuration(
        {
            "t_a": {"after": ["start"], "run": RecordingTask.name},
            "t_b": {"after": ["t_a"], "run": RecordingTask.name},
        }
    )

    # When a fire schedules the first task of a cascade on the worker
    (scheduled,) = manager.fire("start")
    assert build_message(manager, scheduled)["manager"] == "recording"

    # Then the worker ran both tasks with the same manager class and storage
    wait_for(
        lambda: len(read_events(hooks_key(unique_uid))) == 3,
        timeout=20,
        message="three _post_fire calls",
    )
    hooks = read_events(hooks_key(unique_uid))
    runs = read_events(runs_key(unique_uid))
    assert [r["instance"] for r in runs] == ["t_a#0", "t_b#0"]
    for run in runs:
        assert run["manager"] == "tests.managers.RecordingManager"
        # The class the registered 'cache' name builds on this cache (Redis).
        assert run["storage"] == "triggers.storages.redis.RedisStorageBackend"
        assert issubclass(RedisStorageBackend, CacheStorageBackend)
        assert run["storage_kwargs"] == {"cache": "default", "timeout": 1234}
    # ... and the cascades inside the worker called its _post_fire hook
    by_trigger = {h["trigger"]: h for h in hooks}
    assert by_trigger["start"]["scheduled"] == ["t_a#0"]
    assert by_trigger["t_a"]["scheduled"] == ["t_b#0"]
    assert by_trigger["t_b"]["scheduled"] == []
    assert by_trigger["start"]["pid"] != by_trigger["t_a"]["pid"]
    worker_pids = set(celery_worker.child_pids())
    assert {by_trigger["t_a"]["pid"], by_trigger["t_b"]["pid"]} <= worker_pids
    assert {h["manager"] for h in hooks} == {"RecordingManager"}


def test_a_worker_rebuilds_an_unregistered_manager_and_calls_its_replay_hook(
    celery_worker, unique_uid
):
    # Given a custom manager class that is registered under no key, and a task
    # that retries itself once on the worker
    manager = UnregisteredManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {"t_retry": {"after": ["retries"], "run": "triggers.testing.SelfRetryingTask"}}
    )

    # When it is scheduled
    (scheduled,) = manager.fire("retries", {"max": 1})

    # Then the message names the class by dotted path ...
    assert build_message(manager, scheduled)["manager"] == "tests.managers.UnregisteredManager"
    settled = {"t_retry#0": TaskInstance.STATUS_REPLAYED, "t_retry#1": TaskInstance.STATUS_FAILED}
    wait_for(
        lambda: {n: i.status for n, i in manager.storage.instances.items()} == settled,
        timeout=20,
        message="t_retry#0 replayed and its clone failed",
    )
    # ... and the worker ran the retry through that class's _post_replay hook
    (replay,) = read_events(hooks_key(unique_uid), hook="post_replay")
    assert replay["instance"] == "t_retry#1"
    assert replay["pid"] in celery_worker.child_pids()
    assert manager.storage["t_retry#1"].metadata["exc_type"] == "triggers.task.MaxRetriesExceeded"


def test_celery_runner_refuses_eager_mode_and_keeps_the_trigger(celery_worker, unique_uid):
    # Given a session whose task runs on the Celery runner
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t_a": {"after": ["start"], "run": RecordingTask.name}})

    # When the trigger fires while Celery is in eager mode
    celery_app.conf.task_always_eager = True
    try:
        with pytest.raises(DispatchError) as caught:
            manager.fire("start", {"page": 1})
    finally:
        celery_app.conf.task_always_eager = False

    # Then the error names the instance and explains the refusal
    error = caught.value
    assert set(error.failures) == {"t_a#0"}
    cause = error.failures["t_a#0"]
    assert isinstance(cause, ConfigurationError)
    assert "task_always_eager" in str(cause) and "threading" in str(cause)
    assert "t_a#0" in str(error)
    # ... nothing ran, and the trigger is recorded with the instance left ready
    assert read_events(runs_key(unique_uid)) == []
    assert manager.storage.latest_kwargs == {"start": {"page": 1}}
    inst = manager.storage["t_a#0"]
    assert inst.status == TaskInstance.STATUS_UNSTARTED and inst.can_run
    assert "task_always_eager" in inst.metadata["dispatch_error"]

    # When eager mode is off and ready instances are sent again
    resent = manager.resend_ready_instances()

    # Then the worker runs it once
    assert [i.name for i in resent] == ["t_a#0"]
    wait_for(
        lambda: manager.storage["t_a#0"].status == TaskInstance.STATUS_FINISHED,
        message="t_a#0 finished",
    )
    assert [r["instance"] for r in read_events(runs_key(unique_uid))] == ["t_a#0"]
    assert "dispatch_error" not in manager.storage["t_a#0"].metadata
