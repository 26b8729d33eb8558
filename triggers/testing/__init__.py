"""Test whole workflows: a test-case mixin whose tasks run in threads of the
test process, assertions about instances, and ready-made tasks.

Usage (``unittest``, ``manage.py test`` or pytest)::

    class QuestionnaireTest(TriggerManagerTestCaseMixin, TestCase):
        def setUp(self):
            super().setUp()
            self.manager = TriggerManager(CacheStorageBackend(uuid4().hex))

Every assertion first waits for running task threads (and their cascades),
so it sees the session's settled state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import runners
from ..manager import TriggerManager
from ..runners.base import BaseTaskRunner
from ..runners.threading import ThreadingTaskRunner
from ..task import TaskContext, TriggerTask
from ..types import TaskInstance

__all__ = [
    "DevNullTask",
    "FailingTask",
    "PassThruTask",
    "SelfRetryingTask",
    "SelfSkippingTask",
    "TriggerManagerTestCaseMixin",
    "run_due_timers",
]


def run_due_timers(
    manager: TriggerManager,
    seconds: float | timedelta = 0,
    *,
    now: datetime | None = None,
    join_timeout: float = 30.0,
) -> int:
    """Drive time without sleeping: apply the timers of ``manager``'s
    storage due ``seconds`` from now (or at ``now``, an aware datetime),
    then wait for the tasks that ran in threads (cascades included).
    Returns how many timers fired::

        manager.fire("remind", delay=timedelta(days=7))
        run_due_timers(manager, timedelta(days=7))   # fires it now

    The sweep covers every session of that storage's due index, like
    :func:`triggers.timers.fire_due_timers` with ``storage=``.
    """
    from ..timers import fire_due_timers

    if now is None:
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=float(seconds))
        now = datetime.now(UTC) + step
    applied = fire_due_timers(now=now, storage=manager.storage)
    ThreadingTaskRunner.join_all(join_timeout)
    return applied


def _swap_default_runner(value: Any) -> Any:
    """Set ``triggers.runners.DEFAULT_TASK_RUNNER``; return what it was."""
    previous = runners.DEFAULT_TASK_RUNNER
    runners.DEFAULT_TASK_RUNNER = value
    return previous


class TriggerManagerTestCaseMixin:
    """Mix into a test case; set ``self.manager`` in ``setUp``."""

    manager: TriggerManager
    #: Longest wait for task threads before an assertion gives up.
    join_timeout: float = 30.0

    #: Replaces ``triggers.runners.DEFAULT_TASK_RUNNER`` while a test runs;
    #: tasks with ``using`` and managers that name their own default runner
    #: keep theirs.
    default_runner_for_tests: str | type[BaseTaskRunner] = "threading"

    # unittest / manage.py test / pytest running TestCase classes
    def run(self, result: Any = None) -> Any:
        previous = _swap_default_runner(self.default_runner_for_tests)
        try:
            return super().run(result)  # type: ignore[misc]
        finally:
            ThreadingTaskRunner.join_all(self.join_timeout)
            _swap_default_runner(previous)

    # plain pytest classes
    def setup_method(self, method: Any = None) -> None:
        self._triggers_previous_runner = _swap_default_runner(self.default_runner_for_tests)

    def teardown_method(self, method: Any = None) -> None:
        ThreadingTaskRunner.join_all(self.join_timeout)
        if hasattr(self, "_triggers_previous_runner"):
            _swap_default_runner(self._triggers_previous_runner)

    def run_due_timers(self, seconds: float | timedelta = 0, *, now: datetime | None = None) -> int:
        """Apply ``self.manager``'s timers due ``seconds`` from now (or at
        ``now``) and wait for the tasks they started; see
        :func:`run_due_timers`."""
        return run_due_timers(self.manager, seconds, now=now, join_timeout=self.join_timeout)

    # -- helpers -------------------------------------------------------------
    def _fail(self, message: str) -> None:
        raise AssertionError(message)

    def _settled_instances(self) -> dict[str, TaskInstance]:
        ThreadingTaskRunner.join_all(self.join_timeout)
        return self.manager.storage.instances

    def _describe(self, inst: TaskInstance) -> str:
        meta = {k: v for k, v in inst.metadata.items() if k != "exc_traceback"}
        text = (
            f"{inst.name} is {inst.status!r}\n"
            f"kwargs: {json.dumps(inst.kwargs, indent=2, sort_keys=True, default=repr)}\n"
            f"metadata: {json.dumps(meta, indent=2, sort_keys=True, default=repr)}"
        )
        if inst.metadata.get("exc_traceback"):
            text += f"\ntraceback:\n{inst.metadata['exc_traceback']}"
        return text

    def _get(self, instance_name: str) -> TaskInstance:
        instances = self._settled_instances()
        if instance_name not in instances:
            known = ", ".join(instances) or "none"
            self._fail(f"no instance {instance_name!r} in the session (instances: {known})")
        return instances[instance_name]

    def _assert_status(self, instance_name: str, status: str) -> TaskInstance:
        inst = self._get(instance_name)
        if inst.status != status:
            self._fail(f"expected {instance_name} to be {status!r}, but {self._describe(inst)}")
        return inst

    # -- assertions ------------------------------------------------------------
    def assertInstanceAbandoned(self, instance_name: str) -> TaskInstance:
        return self._assert_status(instance_name, TaskInstance.STATUS_ABANDONED)

    def assertInstanceFailed(
        self, instance_name: str, exc_type: type[BaseException]
    ) -> TaskInstance:
        inst = self._assert_status(instance_name, TaskInstance.STATUS_FAILED)
        wanted = f"{exc_type.__module__}.{exc_type.__qualname__}"
        found = list(inst.metadata.get("exc_mro", [inst.metadata.get("exc_type")]))
        # A task that ran out of retries failed with MaxRetriesExceeded, caused
        # by the error it retried on; either type matches, as in the original.
        found += (inst.metadata.get("exc_context") or {}).get("retry_cause_mro", [])
        if wanted not in found:
            self._fail(
                f"expected {instance_name} to fail with {wanted}, but {self._describe(inst)}"
            )
        return inst

    def assertInstanceFinished(
        self, instance_name: str, expected_result: Mapping[str, Any] | None = None
    ) -> TaskInstance:
        inst = self._assert_status(instance_name, TaskInstance.STATUS_FINISHED)
        if expected_result is not None and inst.metadata.get("result") != expected_result:
            self._fail(
                f"expected {instance_name} to finish with {expected_result!r}, "
                f"got {inst.metadata.get('result')!r}\n{self._describe(inst)}"
            )
        return inst

    def assertInstanceMissing(self, instance_name: str) -> None:
        instances = self._settled_instances()
        if instance_name in instances:
            found = self._describe(instances[instance_name])
            self._fail(f"expected no instance {instance_name!r}, but {found}")

    def assertInstanceReplayed(self, instance_name: str) -> TaskInstance:
        return self._assert_status(instance_name, TaskInstance.STATUS_REPLAYED)

    def assertInstanceSkipped(self, instance_name: str) -> TaskInstance:
        return self._assert_status(instance_name, TaskInstance.STATUS_SKIPPED)

    def assertInstanceUnstarted(self, instance_name: str) -> TaskInstance:
        return self._assert_status(instance_name, TaskInstance.STATUS_UNSTARTED)

    def assertUnresolvedTasks(self, task_names: Iterable[str]) -> None:
        ThreadingTaskRunner.join_all(self.join_timeout)
        actual = sorted(t.name for t in self.manager.storage.get_unresolved_tasks())
        if actual != sorted(task_names):
            self._fail(f"unresolved tasks: expected {sorted(task_names)}, got {actual}")

    def assertUnresolvedInstances(self, instance_names: Iterable[str]) -> None:
        ThreadingTaskRunner.join_all(self.join_timeout)
        unresolved = self.manager.storage.get_unresolved_instances()
        actual = sorted(i.name for i in unresolved)
        if actual != sorted(instance_names):
            details = "\n".join(self._describe(i) for i in unresolved)
            self._fail(
                f"unresolved instances: expected {sorted(instance_names)}, got {actual}\n{details}"
            )


class DevNullTask(TriggerTask):
    """Does nothing; finishes with ``{}``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        return {}


class PassThruTask(TriggerTask):
    """Finishes with ``{'kwargs': <the trigger kwargs it received>}``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        return {"kwargs": context.trigger_kwargs}


class FailingTask(TriggerTask):
    """Always fails with ``RuntimeError``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise RuntimeError(f"{context.instance_name} failed on purpose")


class SelfSkippingTask(TriggerTask):
    """Marks itself skipped."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise self.skip(metadata={"reason": "skipped on purpose"})


class SelfRetryingTask(TriggerTask):
    """Retries itself every run; fails with ``MaxRetriesExceeded`` once the
    chain is ``trigger_kwargs['retries']['max']`` deep (default
    ``max_retries``)."""

    def get_max_retries(self, context: TaskContext) -> int:
        retries = context.trigger_kwargs.get("retries") or {}
        return int(retries.get("max", super().get_max_retries(context)))

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise self.retry(
            metadata={"retried_at_depth": context.task_instance.metadata.get("depth", 0)}
        )
