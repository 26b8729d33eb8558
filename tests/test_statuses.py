"""Statuses, meta-statuses and instance metadata (SPEC §4)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from tests.contract_backends import (
    DEV,
    PASS,
    BlockingTask,
    gate,
    settle,
)
from tests.utils import wait_for
from triggers.exceptions import with_context
from triggers.manager import TriggerManager
from triggers.task import TaskContext, TriggerTask
from triggers.testing import FailingTask
from triggers.types import TaskConfig, TaskInstance

pytestmark = pytest.mark.usefixtures("threaded")


class ContextFailingTask(TriggerTask):
    """Fails with a context attached to the exception."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise with_context(KeyError("row"), {"row": 3, "sheet": "answers"})


META = ("can_schedule", "can_run", "can_abandon", "can_replay", "can_skip", "is_resolved")


def meta_statuses(inst: TaskInstance) -> dict[str, bool]:
    return {name: getattr(inst, name) for name in META}


def test_status_constants() -> None:
    assert (
        TaskInstance.STATUS_UNSTARTED,
        TaskInstance.STATUS_SCHEDULED,
        TaskInstance.STATUS_RUNNING,
        TaskInstance.STATUS_FINISHED,
        TaskInstance.STATUS_FAILED,
        TaskInstance.STATUS_REPLAYED,
        TaskInstance.STATUS_SKIPPED,
        TaskInstance.STATUS_ABANDONED,
    ) == (
        "unstarted",
        "scheduled",
        "running",
        "finished",
        "failed",
        "replayed",
        "skipped",
        "abandoned",
    )


def test_unstarted_instance(manager: TriggerManager) -> None:
    # Given an instance that has one of its two triggers
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a", {"v": 1})
    # Then it is unstarted, can be scheduled but not run, and has logged nothing
    inst = manager.storage["t_x#0"]
    assert inst.name == "t_x#0"
    assert inst.config == manager.storage.tasks["t_x"]
    assert inst.status == "unstarted"
    assert inst.kwargs == {"a": {"v": 1}}
    assert inst.abandon_state == {}
    assert meta_statuses(inst) == {
        "can_schedule": True,
        "can_run": False,
        "can_abandon": False,
        "can_replay": False,
        "can_skip": False,
        "is_resolved": False,
    }
    assert inst.log_level == logging.NOTSET
    assert inst.log_level_name == "NOTSET"
    assert inst.logs_resolved
    stamps = inst.metadata["timestamps"]
    assert {"created", "unstarted", "last_modified"} <= set(stamps)
    assert stamps["last_modified"] >= stamps["created"]


def test_scheduled_then_running_then_finished(manager: TriggerManager) -> None:
    # Given a task that blocks while running
    manager.update_configuration({"t_x": {"after": ["a"], "run": BlockingTask.name}})
    storage = manager.storage
    # When it is fired while the session is held, the worker cannot claim it yet
    with storage.acquire_lock():
        manager.fire("a")
        assert storage["t_x#0"].status == "scheduled"
        assert meta_statuses(storage["t_x#0"])["can_schedule"] is False
    # Then once released it runs; while it runs it is 'running'
    running = wait_for(lambda: storage["t_x#0"].status == "running", message="t_x#0 running")
    assert running
    inst = storage["t_x#0"]
    assert meta_statuses(inst) == dict.fromkeys(META, False)
    assert inst.log_level == logging.NOTSET
    # When it is let go, it finishes with its result
    gate(storage.uid, "t_x#0").set()
    settle()
    inst = storage["t_x#0"]
    assert inst.status == "finished"
    assert inst.metadata["result"] == {"opened": True}
    assert meta_statuses(inst)["is_resolved"] is True
    stamps = inst.metadata["timestamps"]
    order = ["created", "unstarted", "scheduled", "running", "finished"]
    times = [datetime.fromisoformat(stamps[s]) for s in order]
    assert times == sorted(times)
    assert stamps["last_modified"] == stamps["finished"]


def test_finished_instance_metadata(manager: TriggerManager) -> None:
    # Given a finished task with static params
    manager.update_configuration(
        {"t_x": {"after": ["a"], "run": PASS, "withParams": {"a": {"static": 1}}}}
    )
    manager.fire("a", {"v": 1})
    settle()
    inst = manager.storage["t_x#0"]
    # Then its metadata holds the actual kwargs the task received and its result
    assert inst.metadata["kwargs"] == {"a": {"static": 1, "v": 1}}
    assert inst.metadata["result"] == {"kwargs": {"a": {"static": 1, "v": 1}}}
    assert "parent" not in inst.metadata
    assert inst.metadata.get("depth", 0) == 0
    # A task that logged nothing has logs resolved
    assert inst.log_level == logging.NOTSET
    assert inst.logs_resolved


def test_failed_instance_keeps_exception_type_traceback_and_context(
    manager: TriggerManager,
) -> None:
    # Given a task that fails with a context attached
    manager.update_configuration({"t_x": {"after": ["a"], "run": ContextFailingTask.name}})
    manager.fire("a")
    settle()
    inst = manager.storage["t_x#0"]
    # Then it is failed, replayable and skippable, not resolved
    assert inst.status == "failed"
    assert meta_statuses(inst) == {
        "can_schedule": False,
        "can_run": False,
        "can_abandon": False,
        "can_replay": True,
        "can_skip": True,
        "is_resolved": False,
    }
    assert inst.metadata["exc_type"] == "builtins.KeyError"
    assert "Traceback (most recent call last)" in inst.metadata["exc_traceback"]
    assert "raise with_context(KeyError" in inst.metadata["exc_traceback"]
    assert inst.metadata["exc_context"] == {"row": 3, "sheet": "answers"}
    assert "failed" in inst.metadata["timestamps"]
    # And what it logged (the failure) is an unresolved ERROR
    assert inst.log_level == logging.ERROR
    assert inst.log_level_name == "ERROR"
    assert not inst.logs_resolved


def test_failed_without_context_stores_an_empty_context(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a"], "run": FailingTask.name}})
    manager.fire("a")
    settle()
    inst = manager.storage["t_x#0"]
    assert inst.metadata["exc_type"] == "builtins.RuntimeError"
    assert inst.metadata["exc_context"] == {}
    assert "failed on purpose" in inst.metadata["exc_traceback"]


def test_replayed_and_skipped_are_resolved_and_their_logs_irrelevant(
    manager: TriggerManager,
) -> None:
    # Given two failed instances (ERROR logged)
    manager.update_configuration(
        {
            "t_replay": {"after": ["a"], "run": FailingTask.name},
            "t_skip": {"after": ["a"], "run": FailingTask.name},
        }
    )
    manager.fire("a")
    settle()
    # When one is replayed and the other skipped
    clone = manager.replay_failed_instance("t_replay#0")
    manager.skip_failed_instance("t_skip#0")
    settle()
    storage = manager.storage
    # Then both are resolved and their ERROR logs no longer count
    for name, status in (("t_replay#0", "replayed"), ("t_skip#0", "skipped")):
        inst = storage[name]
        assert inst.status == status
        assert inst.is_resolved
        assert not inst.can_replay and not inst.can_skip
        assert inst.log_level == logging.ERROR
        assert inst.logs_resolved
        assert status in inst.metadata["timestamps"]
    # And the clone knows where it came from
    assert clone.name == "t_replay#1"
    assert storage["t_replay#1"].metadata["parent"] == "t_replay#0"
    assert storage["t_replay#1"].metadata["depth"] == 1


def test_abandoned_instance(manager: TriggerManager) -> None:
    # Given an instance abandoned by its `unless` trigger
    manager.update_configuration({"t_x": {"after": ["a", "b"], "unless": ["x"], "run": DEV}})
    manager.fire("a")
    manager.fire("x", {"why": "cancelled"})
    inst = manager.storage["t_x#0"]
    # Then it is resolved, and can no longer be abandoned, run or scheduled
    assert inst.status == "abandoned"
    assert meta_statuses(inst) == {
        "can_schedule": False,
        "can_run": False,
        "can_abandon": False,
        "can_replay": False,
        "can_skip": False,
        "is_resolved": True,
    }
    assert inst.abandon_state == {"x": {"why": "cancelled"}}
    assert inst.logs_resolved


def test_meta_statuses_of_an_unstarted_instance_whose_unless_fired() -> None:
    # Given an unstarted instance holding every `after` and every `unless` trigger
    config = TaskConfig("t_x", after=["a"], run=DEV, unless=["x", "y"])
    inst = TaskInstance("t_x#0", config, kwargs={"a": {}}, abandon_state={"x": {}, "y": {}})
    # Then it should be abandoned rather than run
    assert inst.can_abandon
    assert not inst.can_run
    # With only some `unless` triggers it can run
    partial = TaskInstance("t_x#1", config, kwargs={"a": {}}, abandon_state={"x": {}})
    assert not partial.can_abandon
    assert partial.can_run
    # A task without `unless` can never be abandoned
    plain = TaskInstance("t_y#0", TaskConfig("t_y", after=["a"], run=DEV), kwargs={"a": {}})
    assert not plain.can_abandon and plain.can_run


@pytest.mark.parametrize(
    "level, status, marked, resolved",
    [
        (logging.NOTSET, "finished", False, True),
        (logging.WARNING, "finished", False, True),
        (logging.ERROR, "finished", False, False),
        (logging.CRITICAL, "failed", False, False),
        (logging.ERROR, "failed", True, True),
        (logging.ERROR, "abandoned", False, True),
        (logging.ERROR, "replayed", False, True),
        (logging.ERROR, "skipped", False, True),
    ],
)
def test_logs_resolved_rules(level: int, status: str, marked: bool, resolved: bool) -> None:
    # Given an instance that logged `level` and ended in `status`
    metadata: dict[str, Any] = {"log_level": level}
    if marked:
        metadata["logs_resolved"] = True
    inst = TaskInstance("t_x#0", TaskConfig("t_x", ["a"], DEV), status=status, metadata=metadata)
    # Then its logs need attention only at ERROR and above, in a relevant
    # status, until someone marks them resolved
    assert inst.log_level == level
    assert inst.log_level_name == logging.getLevelName(level)
    assert inst.logs_resolved is resolved
