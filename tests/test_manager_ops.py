"""TriggerManager operations and hooks (SPEC §6)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract_backends import (
    DEV,
    PASS,
    new_uid,
    settle,
    statuses,
)
from triggers.exceptions import LockTimeoutError, UnknownInstanceError
from triggers.manager import TriggerManager
from triggers.runners import task_runners
from triggers.runners.base import DEFAULT_TASK_RUNNER, BaseTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.task import TaskContext, TriggerTask
from triggers.testing import FailingTask
from triggers.types import TaskInstance

#: What the hooks of HookManager saw, per session uid (hooks may run in task
#: threads, on managers rebuilt there).
HOOK_CALLS: dict[str, list[tuple[Any, ...]]] = {}


class HookManager(TriggerManager):
    """Records every hook call, with what another process would see then."""

    def _calls(self) -> list[tuple[Any, ...]]:
        return HOOK_CALLS.setdefault(self.storage.uid, [])

    def _lock_is_free(self) -> bool:
        """Can another process take the session lock while this hook runs?

        A task thread started by the operation may hold it for a moment, so
        wait a little; were the lock still held by the operation calling this
        hook, no wait would be long enough.
        """
        lock = CacheStorageBackend(self.storage.uid).make_lock()
        try:
            lock.acquire_within(5)
        except LockTimeoutError:
            return False
        lock.release()
        return True

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        self._calls().append(
            ("fire", trigger_name, [i.name for i in tasks_scheduled], self._lock_is_free())
        )
        if trigger_name == "outer":
            # Firing again from the hook must not deadlock on the session lock.
            self.fire("inner", {"from": "hook"})

    def _post_replay(self, task_instance: TaskInstance) -> None:
        stored = self.storage[task_instance.name]
        self._calls().append(
            ("replay", task_instance.name, dict(task_instance.metadata), stored.status)
        )

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        after = statuses(self.storage)
        self._calls().append(
            ("skip", task_instance.name, task_instance.status, cascade, after, self._lock_is_free())
        )


class FixableTask(TriggerTask):
    """Fails unless its `a` kwargs say it has been fixed."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        if not context.trigger_kwargs.get("a", {}).get("fixed"):
            raise ValueError("not fixed yet")
        return {"fixed": True}


@pytest.fixture(name="hooked")
def hooked_fixture(threaded: None) -> HookManager:
    return HookManager(CacheStorageBackend(new_uid("hooks")))


def calls_of(manager: TriggerManager, kind: str) -> list[tuple[Any, ...]]:
    return [c for c in HOOK_CALLS.get(manager.storage.uid, []) if c[0] == kind]


def failed_session(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_fix": {"after": ["a"], "run": FixableTask.name},
            "t_next": {"after": ["t_fix"], "run": PASS},
        }
    )
    manager.fire("a", {"fixed": False})
    settle()
    assert manager.storage["t_fix#0"].status == "failed"


# -- replay -------------------------------------------------------------------


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("by", ["name", "instance"])
def test_replay_with_replacement_kwargs_runs_a_clone_at_once(
    manager: TriggerManager, by: str
) -> None:
    # Given a failed instance
    failed_session(manager)
    target: Any = "t_fix#0" if by == "name" else manager.storage["t_fix#0"]
    # When it is replayed with corrected kwargs
    clone = manager.replay_failed_instance(target, replacement_kwargs={"a": {"fixed": True}})
    assert clone.status == "scheduled"  # handed to the runner at once
    settle()
    # Then it is marked replayed and its clone ran (and cascaded) with the new kwargs
    storage = manager.storage
    assert clone.name == "t_fix#1"
    assert statuses(storage) == {
        "t_fix#0": "replayed",
        "t_fix#1": "finished",
        "t_next#0": "finished",
    }
    assert storage["t_fix#1"].kwargs == {"a": {"fixed": True}}
    assert storage["t_fix#1"].metadata["parent"] == "t_fix#0"
    assert storage["t_fix#1"].metadata["depth"] == 1
    assert storage["t_next#0"].kwargs == {"t_fix": {"fixed": True}}


@pytest.mark.usefixtures("threaded")
def test_replay_without_replacement_keeps_the_kwargs(manager: TriggerManager) -> None:
    failed_session(manager)
    manager.replay_failed_instance("t_fix#0")
    settle()
    clone = manager.storage["t_fix#1"]
    assert clone.kwargs == {"a": {"fixed": False}}
    assert clone.status == "failed"  # same input, same failure


@pytest.mark.usefixtures("threaded")
def test_replay_with_empty_replacement_means_no_kwargs(manager: TriggerManager) -> None:
    # Given a failed instance
    failed_session(manager)
    # When it is replayed with {} (not None)
    manager.replay_failed_instance("t_fix#0", replacement_kwargs={})
    settle()
    # Then the clone ran with no kwargs at all (scheduled at once even so)
    clone = manager.storage["t_fix#1"]
    assert clone.kwargs == {}
    assert clone.metadata["kwargs"] == {}
    assert clone.status == "failed"


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("status", ["unstarted", "finished", "replayed", "skipped"])
def test_replay_refuses_instances_that_are_not_failed(manager: TriggerManager, status: str) -> None:
    # Given an instance in another status
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    manager.update_instance_status("t_x#0", status)
    before = manager.storage.debug_repr()
    # Then replaying (or skipping) it is a ValueError naming it, and changes nothing
    with pytest.raises(ValueError, match=r"t_x#0.*" + status):
        manager.replay_failed_instance("t_x#0")
    with pytest.raises(ValueError, match=r"t_x#0.*" + status):
        manager.skip_failed_instance("t_x#0")
    assert manager.storage.debug_repr() == before


def test_post_replay_gets_the_clone_after_the_write(hooked: HookManager) -> None:
    failed_session(hooked)
    clone = hooked.replay_failed_instance("t_fix#0", replacement_kwargs={"a": {"fixed": True}})
    settle()
    [call] = calls_of(hooked, "replay")
    _, name, metadata, stored_status = call
    assert name == clone.name == "t_fix#1"
    assert metadata["parent"] == "t_fix#0"
    # Called after the write: the clone is already stored (and scheduled or later)
    assert stored_status != "unstarted"


# -- skip ---------------------------------------------------------------------


@pytest.mark.usefixtures("threaded")
def test_skip_without_cascade_resolves_it_and_runs_nothing_after(
    manager: TriggerManager,
) -> None:
    failed_session(manager)
    skipped = manager.skip_failed_instance(manager.storage["t_fix#0"])
    settle()
    assert skipped.status == "skipped"
    assert statuses(manager.storage) == {"t_fix#0": "skipped"}
    assert manager.storage.get_unresolved_instances() == []


@pytest.mark.usefixtures("threaded")
def test_skip_with_cascade_fires_the_result_as_if_it_had_finished(
    manager: TriggerManager,
) -> None:
    # Given a failed instance with a task after it
    failed_session(manager)
    # When it is skipped with a simulated result
    manager.skip_failed_instance("t_fix#0", cascade=True, result={"fixed": "by hand"})
    settle()
    # Then the next task ran with that result as the cascade's kwargs
    assert statuses(manager.storage) == {"t_fix#0": "skipped", "t_next#0": "finished"}
    assert manager.storage["t_next#0"].kwargs == {"t_fix": {"fixed": "by hand"}}
    assert manager.storage["t_fix#0"].metadata["result"] == {"fixed": "by hand"}


@pytest.mark.usefixtures("threaded")
def test_skip_with_cascade_and_no_result_cascades_empty_kwargs(
    manager: TriggerManager,
) -> None:
    failed_session(manager)
    manager.skip_failed_instance("t_fix#0", cascade=True)
    settle()
    assert manager.storage["t_next#0"].kwargs == {"t_fix": {}}


@pytest.mark.parametrize("cascade", [False, True])
def test_post_skip_runs_after_the_cascade_and_unlock(hooked: HookManager, cascade: bool) -> None:
    failed_session(hooked)
    hooked.skip_failed_instance("t_fix#0", cascade=cascade, result={"r": 1})
    settle()
    [call] = calls_of(hooked, "skip")
    _, name, status, seen_cascade, after, lock_free = call
    assert (name, status, seen_cascade, lock_free) == ("t_fix#0", "skipped", cascade, True)
    # With a cascade, the next task already exists when the hook runs
    assert ("t_next#0" in after) is cascade


# -- direct updates -------------------------------------------------------------


@pytest.mark.usefixtures("threaded")
def test_update_instance_status_with_metadata_and_cascade(manager: TriggerManager) -> None:
    # Given an instance waiting for a trigger that will never come
    manager.update_configuration(
        {
            "t_x": {"after": ["a", "never"], "run": DEV},
            "t_next": {"after": ["t_x"], "run": PASS},
        }
    )
    manager.fire("a")
    # When an operator marks it finished, cascading a result
    updated = manager.update_instance_status(
        "t_x#0", "finished", metadata={"by": "ops"}, cascade=True, cascade_kwargs={"v": 1}
    )
    settle()
    # Then it is finished with the metadata, and the next task ran
    assert updated.status == "finished"
    inst = manager.storage["t_x#0"]
    assert inst.status == "finished"
    assert inst.metadata["by"] == "ops"
    assert "finished" in inst.metadata["timestamps"]
    assert manager.storage["t_next#0"].status == "finished"
    assert manager.storage["t_next#0"].kwargs == {"t_x": {"v": 1}}


@pytest.mark.usefixtures("threaded")
def test_update_instance_status_without_cascade_fires_nothing(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_x": {"after": ["a", "never"], "run": DEV}, "t_next": {"after": ["t_x"], "run": DEV}}
    )
    manager.fire("a")
    manager.update_instance_status(manager.storage["t_x#0"], "skipped")
    settle()
    assert statuses(manager.storage) == {"t_x#0": "skipped"}


@pytest.mark.usefixtures("threaded")
def test_update_instance_status_rejects_unknown_statuses(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    with pytest.raises(ValueError, match="done"):
        manager.update_instance_status("t_x#0", "done")
    assert manager.storage["t_x#0"].status == "unstarted"


@pytest.mark.usefixtures("threaded")
def test_update_instance_metadata_merges(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    manager.update_instance_metadata("t_x#0", {"note": "first", "n": 1})
    manager.update_instance_metadata(manager.storage["t_x#0"], {"n": 2})
    meta = manager.storage["t_x#0"].metadata
    assert meta["note"] == "first" and meta["n"] == 2
    assert "timestamps" in meta
    assert manager.storage["t_x#0"].status == "unstarted"


@pytest.mark.usefixtures("threaded")
def test_mark_instance_logs_resolved(manager: TriggerManager) -> None:
    # Given a failed instance (its ERROR log is unresolved)
    manager.update_configuration({"t_x": {"after": ["a"], "run": FailingTask.name}})
    manager.fire("a")
    settle()
    assert [i.name for i in manager.storage.get_instances_with_unresolved_logs()] == ["t_x#0"]
    # When someone marks it resolved
    manager.mark_instance_logs_resolved("t_x#0")
    # Then it no longer needs attention, and is still failed
    inst = manager.storage["t_x#0"]
    assert inst.logs_resolved and inst.status == "failed"
    assert manager.storage.get_instances_with_unresolved_logs() == []


# -- _post_fire ---------------------------------------------------------------


def test_post_fire_is_called_after_the_lock_is_released(hooked: HookManager) -> None:
    # Given a task for the trigger the hook fires, and one for the outer trigger
    hooked.update_configuration(
        {
            "t_outer": {"after": ["outer"], "run": DEV},
            "t_inner": {"after": ["inner"], "run": PASS},
        }
    )
    # When a trigger fires (and its hook fires another on the same session)
    scheduled = hooked.fire("outer")
    settle()
    # Then the hook got the trigger and what it scheduled, saw the session
    # unlocked, and its own fire went through without deadlock
    calls = calls_of(hooked, "fire")
    assert ("fire", "outer", ["t_outer#0"], True) in calls
    assert ("fire", "inner", ["t_inner#0"], True) in calls
    assert [i.name for i in scheduled] == ["t_outer#0"]
    assert hooked.storage["t_inner#0"].metadata["result"] == {"kwargs": {"inner": {"from": "hook"}}}
    # Cascades fired in task threads call the hook too (on a rebuilt HookManager)
    assert ("fire", "t_outer", [], True) in calls


def test_post_fire_gets_an_empty_list_when_nothing_was_scheduled(hooked: HookManager) -> None:
    hooked.fire("nothing")
    assert calls_of(hooked, "fire") == [("fire", "nothing", [], True)]


# -- unknown instances and class attributes -----------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        lambda m: m.replay_failed_instance("t_x#9"),
        lambda m: m.skip_failed_instance("t_x#9"),
        lambda m: m.update_instance_status("t_x#9", "finished"),
        lambda m: m.update_instance_metadata("t_x#9", {"a": 1}),
        lambda m: m.mark_instance_logs_resolved("t_x#9"),
        lambda m: m.storage["t_x#9"],
        lambda m: m.storage.clone_instance("t_x#9"),
        lambda m: m.replay_failed_instance("nonsense"),
    ],
    ids=[
        "replay",
        "skip",
        "update_status",
        "update_metadata",
        "mark_logs_resolved",
        "storage-getitem",
        "clone",
        "no-hash",
    ],
)
def test_unknown_instance_names_raise_key_error_naming_the_instance(
    manager: TriggerManager, operation: Any
) -> None:
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    before = manager.storage.debug_repr()
    with pytest.raises(KeyError) as info:
        operation(manager)
    assert isinstance(info.value, UnknownInstanceError)
    assert ("t_x#9" in str(info.value)) or ("nonsense" in str(info.value))
    assert manager.storage.uid in str(info.value)
    assert manager.storage.debug_repr() == before


class RecordingRunner(BaseTaskRunner):
    """Runs nothing; remembers what it was asked to run."""

    name = "tests-recording"
    seen: list[str] = []

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        self.seen.append(f"{manager.storage.uid}/{task_instance.name}")


task_runners.register(RecordingRunner.name, RecordingRunner)


class RecordingRunnerManager(TriggerManager):
    name = "tests-recording-runner"
    default_task_runner_name = RecordingRunner.name


def test_class_attributes_name_and_default_task_runner_name() -> None:
    assert TriggerManager.name == "default"
    assert TriggerManager.default_task_runner_name == DEFAULT_TASK_RUNNER == "celery"


def test_default_task_runner_name_picks_the_runner_unless_the_task_says_using() -> None:
    # Given a manager subclass whose default runner only records (no forced runner here)
    manager = RecordingRunnerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_default": {"after": ["a"], "run": DEV},
            "t_threaded": {"after": ["a"], "run": DEV, "using": "threading"},
        }
    )
    # When both tasks become ready
    manager.fire("a")
    settle()
    # Then the task without `using` went to the manager's default runner,
    # and the other ran on the threading runner
    assert f"{manager.storage.uid}/t_default#0" in RecordingRunner.seen
    assert f"{manager.storage.uid}/t_threaded#0" not in RecordingRunner.seen
    assert statuses(manager.storage) == {"t_default#0": "scheduled", "t_threaded#0": "finished"}
