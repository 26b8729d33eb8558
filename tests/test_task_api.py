"""Writing tasks (SPEC §5): _run results, retry, skip, failures, TaskContext
and filter_kwargs with the Filters library."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import filters as f
import pytest

from tests.contract_backends import (
    settle,
    statuses,
)
from triggers.exceptions import with_context
from triggers.manager import TriggerManager
from triggers.runners.base import build_message
from triggers.task import MaxRetriesExceeded, TaskContext, TriggerTask
from triggers.testing import FailingTask, SelfRetryingTask
from triggers.types import TaskInstance

pytestmark = pytest.mark.usefixtures("threaded")


class ReturnsNone(TriggerTask):
    def _run(self, context: TaskContext) -> None:
        return None


class ReturnsList(TriggerTask):
    def _run(self, context: TaskContext) -> Any:
        return [1, 2]


class RetriesOnce(TriggerTask):
    """Asks for a retry on the first run, finishes with its kwargs after."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        if not context.task_instance.metadata.get("depth"):
            raise self.retry(
                exc=ConnectionError("service down"),
                metadata={"why": "flaky"},
                replacement_kwargs={"a": {"attempt": 2}},
                cooldown=0.3,
            )
        return {"seen": context.trigger_kwargs}


class RetriesKeepingKwargs(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        if not context.task_instance.metadata.get("depth"):
            raise self.retry()
        return {"seen": context.trigger_kwargs}


class LimitedRetries(TriggerTask):
    max_retries = 1

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise self.retry(exc=TimeoutError("still down"))


class SkipsItself(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise self.skip(metadata={"reason": "nothing to import"})


class FailsWithContext(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise with_context(ValueError("bad row"), {"row": 7})


class ContextProbe(TriggerTask):
    """Reports what its context holds."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        manager = context.manager
        return {
            "instance_name": context.instance_name,
            "task_instance": [context.task_instance.name, context.task_instance.status],
            "manager": f"{type(manager).__module__}.{type(manager).__qualname__}",
            "storage": [type(manager.storage).__name__, manager.storage.uid],
            "cache": getattr(manager.storage, "cache_name", None),
            "trigger_kwargs": context.trigger_kwargs,
            # The context's manager works on the same session.
            "tasks": sorted(manager.storage.tasks),
        }


class ProbingManager(TriggerManager):
    """A custom manager class: tasks must get one of the same type."""


class FilteredTask(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        cleaned = context.filter_kwargs(
            {
                "signup": {
                    "age": f.Required | f.Int | f.Min(0),
                    "email": f.Required | f.Unicode | f.Strip,
                }
            }
        )
        return {"cleaned": cleaned}


def run_before_a_follower(manager: TriggerManager, task: type[TriggerTask]) -> TaskInstance:
    """Run ``task`` as t_x, with t_next waiting for its cascade; return t_x#0."""
    manager.update_configuration(
        {
            "t_x": {"after": ["a"], "run": task.name},
            "t_next": {"after": ["t_x"], "run": ReturnsNone.name},
        }
    )
    manager.fire("a")
    settle()
    return manager.storage["t_x#0"]


def test_run_returning_none_finishes_with_an_empty_result(manager: TriggerManager) -> None:
    # Given a task whose _run returns None, and a task after it
    inst = run_before_a_follower(manager, ReturnsNone)
    # Then it finished with {} and cascaded {}
    assert inst.metadata["result"] == {}
    assert manager.storage["t_next#0"].kwargs == {"t_x": {}}


def test_run_returning_a_non_mapping_fails_with_a_clear_message(
    manager: TriggerManager,
) -> None:
    # Given a task whose _run returns a list
    inst = run_before_a_follower(manager, ReturnsList)
    # Then the instance failed saying what _run must return, and nothing cascaded
    assert inst.status == "failed"
    assert inst.metadata["exc_type"] == "triggers.task.TaskResultError"
    assert "returned list" in inst.metadata["exc_message"]
    assert "must return a mapping" in inst.metadata["exc_message"]
    assert "t_next#0" not in manager.storage


def test_retry_with_cooldown_replacement_kwargs_and_metadata(manager: TriggerManager) -> None:
    # Given a task that asks for one retry with new kwargs after 0.3 s
    manager.update_configuration({"t_x": {"after": ["a"], "run": RetriesOnce.name}})
    manager.fire("a", {"attempt": 1})
    settle()
    storage = manager.storage
    # Then the first run is replayed, keeping the retry's metadata and exception
    first = storage["t_x#0"]
    assert first.status == "replayed"
    assert first.metadata["why"] == "flaky"
    assert first.metadata["exc_type"] == "builtins.ConnectionError"
    # And a clone one level deeper ran with the replacement kwargs
    clone = storage["t_x#1"]
    assert clone.status == "finished"
    assert clone.metadata["parent"] == "t_x#0"
    assert clone.metadata["depth"] == 1
    assert clone.metadata["cooldown"] == 0.3
    assert clone.kwargs == {"a": {"attempt": 2}}
    assert clone.metadata["result"] == {"seen": {"a": {"attempt": 2}}}
    # And it did not start before the cooldown had passed
    replayed_at = datetime.fromisoformat(first.metadata["timestamps"]["replayed"])
    started_at = datetime.fromisoformat(clone.metadata["timestamps"]["running"])
    assert (started_at - replayed_at).total_seconds() >= 0.25


def test_retry_without_replacement_keeps_the_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a"], "run": RetriesKeepingKwargs.name}})
    manager.fire("a", {"v": 1})
    settle()
    assert statuses(manager.storage) == {"t_x#0": "replayed", "t_x#1": "finished"}
    assert manager.storage["t_x#1"].metadata["result"] == {"seen": {"a": {"v": 1}}}
    assert "cooldown" not in manager.storage["t_x#1"].metadata


def test_retrying_past_max_retries_fails_with_max_retries_exceeded(
    manager: TriggerManager,
) -> None:
    # Given a task allowed one retry that always asks for another
    manager.update_configuration({"t_x": {"after": ["a"], "run": LimitedRetries.name}})
    manager.fire("a")
    settle()
    # Then the first run is replayed and the retry fails with MaxRetriesExceeded
    assert statuses(manager.storage) == {"t_x#0": "replayed", "t_x#1": "failed"}
    last = manager.storage["t_x#1"]
    assert last.metadata["exc_type"] == "triggers.task.MaxRetriesExceeded"
    assert "max_retries=1" in last.metadata["exc_message"]
    assert "TimeoutError: still down" in last.metadata["exc_traceback"]
    assert last.can_replay


def test_self_retrying_task_honours_retries_max(manager: TriggerManager) -> None:
    # Given the ready-made retrying task; its limit comes from
    # trigger_kwargs['retries']['max'], i.e. the `retries` trigger's kwargs
    manager.update_configuration({"t_y": {"after": ["retries"], "run": SelfRetryingTask.name}})
    manager.fire("retries", {"max": 2})
    settle()
    assert [manager.storage[f"t_y#{n}"].status for n in range(3)] == [
        "replayed",
        "replayed",
        "failed",
    ]
    assert manager.storage["t_y#2"].metadata["exc_type"].endswith("MaxRetriesExceeded")
    assert MaxRetriesExceeded.__module__ == "triggers.task"


def test_skip_marks_the_instance_skipped_without_cascade(manager: TriggerManager) -> None:
    # Given a task that skips itself, and a task after it
    inst = run_before_a_follower(manager, SkipsItself)
    # Then it is skipped with its metadata, and nothing cascaded
    assert inst.status == "skipped"
    assert inst.metadata["reason"] == "nothing to import"
    assert "t_next#0" not in manager.storage


def test_failure_is_captured_with_its_context(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a"], "run": FailsWithContext.name}})
    manager.fire("a")
    settle()
    inst = manager.storage["t_x#0"]
    assert inst.status == "failed"
    assert inst.metadata["exc_type"] == "builtins.ValueError"
    assert inst.metadata["exc_message"] == "bad row"
    assert inst.metadata["exc_context"] == {"row": 7}
    assert "ValueError: bad row" in inst.metadata["exc_traceback"]


def test_a_failing_task_propagates_its_exception_to_the_runner(
    manager: TriggerManager,
) -> None:
    # Given a ready instance created directly in storage
    manager.update_configuration({"t_x": {"after": ["a"], "run": FailingTask.name}})
    inst = manager.storage.create_instance("t_x", kwargs={"a": {}})
    # When a runner executes its message
    task = manager.get_runner(inst.config).resolve(FailingTask.name)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        task.execute_message(build_message(manager, inst))
    # Then the exception reached the runner and the instance is failed
    assert manager.storage["t_x#0"].status == "failed"


def test_task_context_attributes() -> None:
    # Given a custom manager class and static params
    from tests.contract_backends import new_uid
    from triggers.storages.cache import CacheStorageBackend

    manager = ProbingManager(CacheStorageBackend(new_uid(), cache="djredis"))
    manager.update_configuration(
        {"t_probe": {"after": ["a"], "run": ContextProbe.name, "withParams": {"a": {"s": 1}}}}
    )
    # When the task runs
    manager.fire("a", {"v": 2})
    settle()
    # Then its context describes its instance, session and merged kwargs
    result = manager.storage["t_probe#0"].metadata["result"]
    assert result == {
        "instance_name": "t_probe#0",
        "task_instance": ["t_probe#0", "running"],
        "manager": f"{__name__}.ProbingManager",
        # The class 'cache' builds on this (Redis) alias, as for the fire.
        "storage": ["RedisStorageBackend", manager.storage.uid],
        "cache": "djredis",
        "trigger_kwargs": {"a": {"s": 1, "v": 2}},
        "tasks": ["t_probe"],
    }


def test_task_name_is_its_dotted_path_and_it_is_registered_with_celery() -> None:
    from celery import current_app

    assert ContextProbe.name == f"{__name__}.ContextProbe"
    assert isinstance(current_app.tasks[ContextProbe.name], ContextProbe)


def test_filter_kwargs_transforms_valid_input(manager: TriggerManager) -> None:
    # Given a task that validates its kwargs with Filters
    manager.update_configuration({"t_x": {"after": ["signup"], "run": FilteredTask.name}})
    # When it receives valid (but unnormalised) input
    manager.fire("signup", {"age": "42", "email": "  ann@example.com ", "extra": True})
    settle()
    # Then it gets the converted values
    inst = manager.storage["t_x#0"]
    assert inst.status == "finished", inst.metadata.get("exc_traceback")
    cleaned = inst.metadata["result"]["cleaned"]
    assert cleaned["signup"]["age"] == 42
    assert cleaned["signup"]["email"] == "ann@example.com"


def test_filter_kwargs_fails_the_instance_with_the_filter_messages(
    manager: TriggerManager,
) -> None:
    # Given the same task
    manager.update_configuration({"t_x": {"after": ["signup"], "run": FilteredTask.name}})
    # When it receives input the filters reject
    manager.fire("signup", {"age": "old", "email": ""})
    settle()
    # Then it failed, and the failure carries each filter's message
    inst = manager.storage["t_x#0"]
    assert inst.status == "failed"
    assert inst.metadata["exc_type"] == "triggers.task.KwargsValidationError"
    message = inst.metadata["exc_message"]
    assert "signup.age" in message and "Numeric value expected." in message
    assert "signup.email" in message and "This value is required." in message
