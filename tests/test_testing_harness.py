"""The testing harness (SPEC §11) under unittest and under plain pytest classes.

These tests do not force the threading runner themselves: the mixin must."""

from __future__ import annotations

import io
import unittest
from typing import Any

import pytest

from tests.contract_backends import DEV, new_uid
from triggers.manager import TriggerManager
from triggers.runners.base import default_runner
from triggers.storages.cache import CacheStorageBackend
from triggers.task import MaxRetriesExceeded, TriggerTask
from triggers.testing import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
    TriggerManagerTestCaseMixin,
)

WORKFLOW = {
    "t_null": {"after": ["go"], "run": DevNullTask.name},
    "t_pass": {"after": ["go", "extra"], "run": PassThruTask.name},
    "t_fail": {"after": ["go"], "run": FailingTask.name},
    "t_skip": {"after": ["go"], "run": SelfSkippingTask.name},
    "t_retry": {"after": ["go", "retries"], "run": SelfRetryingTask.name},
    "t_retry_default": {"after": ["go"], "run": SelfRetryingTask.name},
    "t_gone": {"after": ["go", "never"], "unless": ["cancel"], "run": DevNullTask.name},
    "t_waiting": {"after": ["go", "never"], "run": DevNullTask.name},
    "t_later": {"after": ["never"], "run": DevNullTask.name},
}


def fire_workflow(manager: TriggerManager) -> None:
    manager.update_configuration(WORKFLOW)
    manager.fire("cancel")
    manager.fire("extra", {"e": 1})
    manager.fire("retries", {"max": 2})
    manager.fire("go", {"g": 1})


def check_every_assertion(case: Any) -> None:
    """Use every assertion of the mixin on the workflow above, right after the
    fires (the assertions themselves wait for the task threads)."""
    case.assertInstanceFinished("t_null#0", {})
    case.assertInstanceFinished("t_null#0")
    case.assertInstanceFinished("t_pass#0", {"kwargs": {"go": {"g": 1}, "extra": {"e": 1}}})
    case.assertInstanceFailed("t_fail#0", RuntimeError)
    case.assertInstanceFailed("t_fail#0", Exception)  # a base class matches too
    case.assertInstanceSkipped("t_skip#0")
    case.assertInstanceReplayed("t_retry#0")
    case.assertInstanceReplayed("t_retry#1")
    case.assertInstanceFailed("t_retry#2", MaxRetriesExceeded)
    case.assertInstanceMissing("t_retry#3")
    for n in range(SelfRetryingTask.max_retries):
        case.assertInstanceReplayed(f"t_retry_default#{n}")
    case.assertInstanceFailed(f"t_retry_default#{SelfRetryingTask.max_retries}", MaxRetriesExceeded)
    case.assertInstanceAbandoned("t_gone#0")
    case.assertInstanceUnstarted("t_waiting#0")
    case.assertInstanceMissing("t_later#0")
    case.assertUnresolvedTasks(["t_fail", "t_retry", "t_retry_default", "t_waiting", "t_later"])
    case.assertUnresolvedInstances(["t_fail#0", "t_retry#2", "t_retry_default#3", "t_waiting#0"])


def check_every_assertion_fails_when_wrong(case: Any) -> None:
    wrong = [
        lambda: case.assertInstanceFinished("t_fail#0"),
        lambda: case.assertInstanceFinished("t_null#0", {"other": 1}),
        lambda: case.assertInstanceFailed("t_null#0", ValueError),
        lambda: case.assertInstanceFailed("t_fail#0", KeyError),
        lambda: case.assertInstanceSkipped("t_null#0"),
        lambda: case.assertInstanceReplayed("t_null#0"),
        lambda: case.assertInstanceAbandoned("t_waiting#0"),
        lambda: case.assertInstanceUnstarted("t_null#0"),
        lambda: case.assertInstanceUnstarted("t_nothing#0"),
        lambda: case.assertInstanceMissing("t_null#0"),
        lambda: case.assertUnresolvedTasks(["t_fail"]),
        lambda: case.assertUnresolvedInstances([]),
    ]
    for check in wrong:
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"assertion did not fail: {check}")


class SharedChecks:
    """Tests both harness flavours run (as unittest and as pytest methods)."""

    manager: TriggerManager

    def test_every_assertion(self) -> None:
        # The mixin makes threads the default runner while the test runs
        assert default_runner() == "threading"
        fire_workflow(self.manager)
        check_every_assertion(self)

    def test_every_assertion_fails_when_wrong(self) -> None:
        fire_workflow(self.manager)
        check_every_assertion_fails_when_wrong(self)


def make_unittest_case() -> type[unittest.TestCase]:
    class WorkflowTest(SharedChecks, TriggerManagerTestCaseMixin, unittest.TestCase):
        def setUp(self) -> None:
            super().setUp()
            self.manager = TriggerManager(CacheStorageBackend(new_uid("unittest")))

        def test_a_wrong_expectation(self) -> None:
            fire_workflow(self.manager)
            self.assertInstanceFinished("t_fail#0")

    return WorkflowTest


def test_mixin_under_unittest_runner() -> None:
    # Given a unittest TestCase using the mixin (no runner forced beforehand)
    assert default_runner() == "celery"
    case = make_unittest_case()
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    # When unittest's own runner runs it
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=0).run(suite)
    # Then the passing tests pass and the wrong expectation fails
    assert result.testsRun == 3
    assert result.errors == []
    assert [test.id().rsplit(".", 1)[1] for test, _ in result.failures] == [
        "test_a_wrong_expectation"
    ]
    # And the failure message shows the status, metadata and traceback
    message = result.failures[0][1]
    assert "expected t_fail#0 to be 'finished'" in message
    assert "is 'failed'" in message
    assert '"exc_type": "builtins.RuntimeError"' in message
    assert "metadata:" in message
    assert "traceback:" in message
    assert "RuntimeError: t_fail#0 failed on purpose" in message
    # And the forced runner was restored afterwards
    assert default_runner() == "celery"


class TestMixinUnderPlainPytest(SharedChecks, TriggerManagerTestCaseMixin):
    """A plain pytest class: setup_method/teardown_method force the runner."""

    def setup_method(self, method: Any = None) -> None:
        super().setup_method(method)
        self.manager = TriggerManager(CacheStorageBackend(new_uid("pytest")))

    def test_missing_instance_message_lists_the_instances(self) -> None:
        self.manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
        self.manager.fire("a")
        with pytest.raises(AssertionError, match=r"no instance 't_x#5'.*t_x#0"):
            self.assertInstanceUnstarted("t_x#5")


def test_plain_pytest_teardown_restores_the_runner() -> None:
    # Runs after the class above in file order: nothing is left forced
    assert default_runner() == "celery"


@pytest.mark.parametrize(
    "cls", [DevNullTask, PassThruTask, FailingTask, SelfSkippingTask, SelfRetryingTask]
)
def test_ready_made_tasks_are_named_by_dotted_path(cls: type[TriggerTask]) -> None:
    from celery import current_app

    assert cls.name == f"triggers.testing.{cls.__name__}"
    assert isinstance(current_app.tasks[cls.name], cls)
