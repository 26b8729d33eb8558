"""Logging from tasks (SPEC §10): contexts on records, the highest level kept
on the instance, exceptions logged with their context, unresolved logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract_backends import (
    settle,
)
from triggers.exceptions import with_context
from triggers.manager import TriggerManager
from triggers.task import TaskContext, TriggerTask

pytestmark = pytest.mark.usefixtures("threaded")


class LogsWithContext(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        with context.get_logger_context({"request": "r1"}) as log:
            log.debug("details")
            log.info("starting", extra={"context": {"step": 1}})
            log.warning("careful: %s", "disk almost full")
        return {}


class LogsAnError(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        with context.get_logger_context() as log:
            log.error("could not reach the CRM", extra={"context": {"attempt": 3}})
        return {"done": True}


class RaisesInsideTheBlock(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        with context.get_logger_context({"job": 7}) as log:
            log.info("about to fail")
            raise with_context(RuntimeError("boom"), {"row": 3})


class CaptureHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)

    def for_instance(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "triggers_instance", None) == name]


@pytest.fixture(name="captured")
def captured_fixture() -> Iterator[CaptureHandler]:
    """Records logged by this module's tasks (their logger is named after them)."""
    handler = CaptureHandler()
    base = logging.getLogger(__name__)
    previous = base.level
    base.addHandler(handler)
    base.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        base.removeHandler(handler)
        base.setLevel(previous)


def test_block_context_and_per_message_context_are_on_every_record(
    manager: TriggerManager, captured: CaptureHandler
) -> None:
    # Given a task logging inside get_logger_context({'request': 'r1'})
    manager.update_configuration({"t_log": {"after": ["a"], "run": LogsWithContext.name}})
    # When it runs
    manager.fire("a")
    settle()
    # Then every record carries the block's context, plus the message's own
    records = captured.for_instance("t_log#0")
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("DEBUG", "details"),
        ("INFO", "starting"),
        ("WARNING", "careful: disk almost full"),
    ]
    assert [r.context for r in records] == [  # type: ignore[attr-defined]
        {"request": "r1"},
        {"request": "r1", "step": 1},
        {"request": "r1"},
    ]
    assert {r.name for r in records} == {LogsWithContext.name}
    assert {r.triggers_session for r in records} == {manager.storage.uid}  # type: ignore[attr-defined]
    # And the instance keeps the highest level; a warning needs no attention
    inst = manager.storage["t_log#0"]
    assert inst.status == "finished"
    assert inst.log_level == logging.WARNING
    assert inst.log_level_name == "WARNING"
    assert inst.logs_resolved
    assert manager.storage.get_instances_with_unresolved_logs() == []


def test_an_error_logged_by_a_finished_task_is_unresolved_until_marked(
    manager: TriggerManager, captured: CaptureHandler
) -> None:
    # Given a task that finishes but logs an error on the way
    manager.update_configuration({"t_err": {"after": ["a"], "run": LogsAnError.name}})
    manager.fire("a")
    settle()
    [record] = captured.for_instance("t_err#0")
    assert record.levelno == logging.ERROR
    assert record.context == {"attempt": 3}  # type: ignore[attr-defined]
    # Then the instance is finished but its logs need attention
    inst = manager.storage["t_err#0"]
    assert inst.status == "finished"
    assert inst.log_level == logging.ERROR
    assert not inst.logs_resolved
    assert [i.name for i in manager.storage.get_instances_with_unresolved_logs()] == ["t_err#0"]
    # When someone marks them resolved, they no longer do
    manager.mark_instance_logs_resolved("t_err#0")
    assert manager.storage.get_instances_with_unresolved_logs() == []
    assert manager.storage["t_err#0"].log_level == logging.ERROR


def test_an_exception_inside_the_block_is_logged_once_with_its_context(
    manager: TriggerManager, captured: CaptureHandler
) -> None:
    # Given a task raising an exception with a context inside the block
    manager.update_configuration({"t_boom": {"after": ["a"], "run": RaisesInsideTheBlock.name}})
    manager.fire("a")
    settle()
    # Then the exception was logged once, at ERROR, with traceback and context
    records = captured.for_instance("t_boom#0")
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    [error] = errors
    assert error.exc_info is not None and error.exc_info[0] is RuntimeError
    assert "boom" in error.getMessage()
    assert error.context["row"] == 3  # type: ignore[attr-defined]
    assert error.context["job"] == 7  # type: ignore[attr-defined]
    # And the instance failed with the same context and an ERROR log level
    inst = manager.storage["t_boom#0"]
    assert inst.status == "failed"
    assert inst.metadata["exc_context"] == {"row": 3}
    assert inst.log_level == logging.ERROR
    assert not inst.logs_resolved
