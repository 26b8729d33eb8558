"""What a Celery worker does with messages it cannot use (issue 9 items 1 and
5, issue 8 item 4): forged messages are refused before anything named in them
is imported or called; an unregistered manager is rebuilt from its dotted path
or its nearest registered ancestor; an instance whose manager cannot be
rebuilt at all is marked failed, naming the class. Real worker, real broker."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fault_tasks import (
    BrokenClaimManager,
    CountingTask,
    FireRecordingManager,
    broken_claim_key,
    events,
)
from tests.utils import wait_for
from triggers.exceptions import ConfigurationError, DispatchError, InvalidMessageError
from triggers.manager import TriggerManager, trigger_managers
from triggers.runners.base import build_message
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance

CASCADE = {
    "t_first": {"after": ["go"], "run": CountingTask.name},
    "t_second": {"after": ["t_first"], "run": CountingTask.name},
}


def status(manager: TriggerManager, name: str) -> str | None:
    instances = manager.storage.instances
    return instances[name].status if name in instances else None


def forged(marker: Path, uid: str) -> list[tuple[str, dict[str, Any]]]:
    good = {
        "uid": uid,
        "instance": "t_first#0",
        "manager": "default",
        "storage": "cache",
        "storage_kwargs": {},
    }
    return [
        ("shell", {**good, "storage": "os.system", "uid": f"touch {marker}.called"}),
        ("builtin", {**good, "storage": "builtins.eval", "uid": "open('x', 'w')"}),
        ("not-loaded-module", {**good, "storage": "tests.fault_planted.PlantedStorage"}),
        ("not-loaded-manager", {**good, "manager": "tests.fault_planted.PlantedManager"}),
        (
            "fallback-not-a-key",
            {**good, "manager": "x.Y", "manager_fallbacks": ["tests.fault_planted.explode"]},
        ),
        ("non-subclass", {**good, "manager": "subprocess.Popen"}),
        ("unknown-key", {**good, "callback": "os.system"}),
        ("storage-kwargs", {**good, "storage_kwargs": "cache"}),
        ("bad-uid", {**good, "uid": "a\x1fb"}),
    ]


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "planted"
    monkeypatch.setenv("TRIGGERS_PLANTED_MARKER", str(path))
    return path


def test_forged_messages_import_and_call_nothing_in_process(marker: Path, unique_uid: str) -> None:
    # Given the worker-side entry point of a trigger task (warmed up: the
    # first refusal may import what logging needs)
    from celery import current_app

    task = current_app.tasks[CountingTask.name]
    with pytest.raises(InvalidMessageError):
        task.run(**{**forged(marker, unique_uid)[0][1], "storage": "os.getcwd"})
    task.run(**{**forged(marker, unique_uid)[0][1], "storage": "cache", "manager": "no.such.M"})
    assert "tests.fault_planted" not in sys.modules
    for label, message in forged(marker, unique_uid):
        before = set(sys.modules)
        # When a forged message is executed
        try:
            outcome = task.run(**message)
        except InvalidMessageError:
            outcome = "refused"
        # Then it was refused or found nothing to run, and nothing was
        # imported (no new module at all) or called
        assert outcome in ("refused", None), label
        assert set(sys.modules) - before == set(), label
        assert "tests.fault_planted" not in sys.modules, label
        assert not list(marker.parent.glob("planted*")), label
    assert not Path("x").exists()


def test_forged_messages_are_refused_by_a_real_worker(
    celery_worker: Any, marker: Path, unique_uid: str
) -> None:
    # The worker inherits TRIGGERS_PLANTED_MARKER only if started after the
    # fixture set it: ask the running worker to run them and read its log.
    from celery import current_app

    task = current_app.tasks[CountingTask.name]
    labels = []
    for label, message in forged(marker, unique_uid):
        message = {**message, "uid": f"{message['uid']}-{label}"}
        task.apply_async(kwargs=message)
        labels.append(f"-{label}")
    wait_for(
        lambda: all(tag in celery_worker.log_path.read_text(errors="replace") for tag in labels),
        timeout=30,
        message="the worker logged every forged message",
    )
    log = celery_worker.log_path.read_text(errors="replace")
    assert "refusing a task message this library did not write" in log
    assert not Path(f"{marker}.called").exists()
    assert not list(Path("/").glob(f"{marker.name}*"))


# -- issue 8 item 4: unregistered managers --------------------------------------


def test_an_unregistered_manager_keeps_its_behaviour_in_task_threads(unique_uid: str) -> None:
    # Given a manager class defined here, in a function: no worker could import it
    seen: list[str] = []

    class LocalManager(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            seen.append(trigger_name)

    manager = LocalManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({n: {**c, "using": "threading"} for n, c in CASCADE.items()})
    # When its tasks run and cascade in task threads
    manager.fire("go")
    ThreadingTaskRunner.join_all()
    # Then they ran (not stuck in 'scheduled') and its hook saw the cascades
    assert status(manager, "t_second#0") == TaskInstance.STATUS_FINISHED
    assert seen == ["go", "t_first", "t_second"]


def test_a_module_level_unregistered_manager_is_rebuilt_in_the_worker(
    celery_worker: Any, unique_uid: str
) -> None:
    manager = FireRecordingManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CASCADE)
    manager.fire("go")
    wait_for(lambda: status(manager, "t_second#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    # _post_fire ran for the cascades the worker's tasks fired
    fired = [e["trigger"] for e in events(unique_uid, "post_fire")]
    assert sorted(fired) == ["go", "t_first", "t_second"]
    assert {e["pid"] for e in events(unique_uid, "post_fire") if e["trigger"] != "go"} != {
        os.getpid()
    }


def test_a_manager_defined_in_a_function_falls_back_to_its_registered_ancestor(
    celery_worker: Any, unique_uid: str
) -> None:
    class LocalManager(FireRecordingManager):
        pass

    manager = LocalManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CASCADE)
    message = build_message(manager, TaskInstance("t_first#0", manager.storage.tasks["t_first"]))
    assert message["manager_fallbacks"] == ["default"]
    manager.fire("go")
    # The worker ran the tasks with the nearest registered ancestor ...
    wait_for(lambda: status(manager, "t_second#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    # ... and said so
    wait_for(
        lambda: (
            "using its registered ancestor 'default'"
            in celery_worker.log_path.read_text(errors="replace")
        ),
        timeout=10,
    )


def test_a_manager_no_worker_can_rebuild_fails_the_instance_naming_it(
    celery_worker: Any, unique_uid: str
) -> None:
    # Given a manager registered in this process only (the worker never
    # imports the code that registers it)
    class HereOnlyManager(TriggerManager):
        name = "tests-here-only"

    trigger_managers.register("tests-here-only", HereOnlyManager)
    manager = HereOnlyManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CASCADE)
    manager.fire("go")
    # Then the worker marks the instance failed with the reason, naming the class
    wait_for(lambda: status(manager, "t_first#0") == TaskInstance.STATUS_FAILED, timeout=30)
    inst = manager.storage["t_first#0"]
    assert "tests-here-only" in inst.metadata["exc_message"]
    assert inst.metadata["failed_outside_task"] is True
    assert manager.find_stuck_instances(older_than=0) == []
    wait_for(
        lambda: (
            f"t_first#0 in session {unique_uid!r} failed outside its task body"
            in celery_worker.log_path.read_text(errors="replace")
        ),
        timeout=10,
    )


def test_a_storage_class_no_worker_can_rebuild_fails_at_dispatch(unique_uid: str) -> None:
    class LocalStorage(CacheStorageBackend):
        pass

    manager = TriggerManager(LocalStorage(unique_uid))
    manager.update_configuration(CASCADE)
    with pytest.raises(DispatchError) as info:
        manager.fire("go")
    assert "LocalStorage" in str(info.value) and "t_first#0" in str(info.value)
    assert "LocalStorage" in manager.storage["t_first#0"].metadata["dispatch_error"]


def test_a_claim_that_fails_in_a_worker_fails_the_instance(
    celery_worker: Any, redis_client: Any, unique_uid: str
) -> None:
    # Given a worker whose claim of the instance fails (not a Redis hiccup)
    redis_client.set(broken_claim_key(unique_uid), 100_000, ex=300)
    manager = BrokenClaimManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CASCADE)
    manager.fire("go")
    # Then the instance is failed with the error, not left 'scheduled'
    wait_for(lambda: status(manager, "t_first#0") == TaskInstance.STATUS_FAILED, timeout=30)
    inst = manager.storage["t_first#0"]
    assert inst.metadata["exc_type"] == "builtins.RecursionError"
    assert "RecursionError" in inst.metadata["exc_traceback"]
    assert manager.find_stuck_instances(older_than=0) == []
    # ... and once the cause is gone it can be replayed
    redis_client.delete(broken_claim_key(unique_uid))
    manager.replay_failed_instance("t_first#0")
    wait_for(lambda: status(manager, "t_second#0") == TaskInstance.STATUS_FINISHED, timeout=30)


def test_a_run_naming_a_module_never_imports_it(marker: Path, unique_uid: str) -> None:
    # Issue 9 item 6: configuration written by admins names a module with
    # side effects; the library looks the name up, it never imports it
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    with pytest.raises(ConfigurationError):  # the first lookup loads the app's own modules
        manager.update_configuration({"t_x": {"after": ["a"], "run": "no.such.Task"}})
    before = set(sys.modules)
    with pytest.raises(ConfigurationError, match="no Celery task named"):
        manager.update_configuration(
            {"t_x": {"after": ["a"], "run": "tests.fault_planted.PlantedManager"}}
        )
    assert "tests.fault_planted" not in sys.modules
    assert set(sys.modules) - before == set()
    assert not list(marker.parent.glob("planted*"))


def test_a_claim_that_times_out_in_a_worker_is_requeued_with_backoff(
    celery_worker: Any, redis_client: Any, unique_uid: str
) -> None:
    # Given a worker whose first two claims of t_first#0 time out (Redis
    # not answering)
    redis_client.set(broken_claim_key(unique_uid), 2, ex=300)
    manager = BrokenClaimManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t_first": CASCADE["t_first"]})
    manager.fire("go")
    # Then the message is re-queued with backoff (a WARNING each time) and
    # the instance runs once the session answers
    wait_for(lambda: status(manager, "t_first#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    log = celery_worker.log_path.read_text(errors="replace")
    warnings = [
        line
        for line in log.splitlines()
        if "WARNING" in line and f"could not claim t_first#0 in session {unique_uid!r}" in line
    ]
    assert len(warnings) == 2, warnings
    assert "(attempt 2 of" in warnings[1]
