"""Every fact of the original framework's published pages
(``reference/original-docs/*.rst``) that a user's code could rely on:
imports, names, signatures, statuses, attributes and behaviours, page by
page. Where an original page was mistaken, the test follows the original's
behaviour (docs/migrating.rst lists those cases)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest

from tests.contract_backends import (
    DEV,
    PASS,
    new_uid,
    settle,
    statuses,
)
from triggers.exceptions import with_context
from triggers.manager import TriggerManager, trigger_managers
from triggers.runners import BaseTaskRunner, task_runners
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages import storage_backends
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.task import MaxRetriesExceeded, TaskContext, TriggerTask
from triggers.testing import FailingTask, TriggerManagerTestCaseMixin
from triggers.types import TaskConfig, TaskInstance

# -- imports, as the pages write them ---------------------------------------------

IMPORTS = [
    ("getting_started", "from triggers import TriggerManager, CacheStorageBackend"),
    ("basic_concepts", "from triggers import CacheStorageBackend, TriggerManager"),
    ("managers", "from triggers import TriggerManager"),
    ("storages", "from triggers import TriggerManager"),
    ("inspecting", "from triggers.storages.cache import CacheStorageBackend"),
    ("cookbook", "from triggers.manager import trigger_managers"),
    ("cookbook", "from triggers.storages import storage_backends"),
    ("storages", "from triggers.storages.base import BaseTriggerStorage"),
    ("tasks", "from triggers.task import TaskContext, TriggerTask"),
    ("tasks", "from triggers.task import MaxRetriesExceeded"),
    ("logs", "from triggers.exceptions import with_context"),
    ("testing", "from triggers.testing import TriggerManagerTestCaseMixin"),
    ("testing", "from triggers.runners import ThreadingTaskRunner"),
    ("runners", "from triggers.runners import CeleryTaskRunner, BaseTaskRunner"),
    ("configuration", "from triggers.runners import DEFAULT_TASK_RUNNER"),
    ("status", "from triggers.types import TaskConfig, TaskInstance"),
]


@pytest.mark.parametrize("page,statement", IMPORTS, ids=[f"{p}:{s}" for p, s in IMPORTS])
def test_documented_imports_work(page: str, statement: str) -> None:
    exec(statement, {})


# -- signatures: the documented parameter names work as keywords ----------------

SIGNATURES = [
    ("getting_started", CacheStorageBackend, ["uid", "cache", "timeout"]),
    ("getting_started", TriggerManager, ["storage"]),
    ("managers", TriggerManager.update_configuration, ["configuration"]),
    ("managers", TriggerManager.fire, ["trigger_name", "trigger_kwargs"]),
    (
        "managers",
        TriggerManager.replay_failed_instance,
        ["failed_instance", "replacement_kwargs"],
    ),
    ("managers", TriggerManager.skip_failed_instance, ["failed_instance", "cascade", "result"]),
    (
        "managers",
        TriggerManager.update_instance_status,
        ["task_instance", "status", "metadata", "cascade", "cascade_kwargs"],
    ),
    ("managers", TriggerManager.update_instance_metadata, ["task_instance", "metadata"]),
    ("managers", TriggerManager.mark_instance_logs_resolved, ["task_instance"]),
    ("managers", TriggerManager._post_fire, ["trigger_name", "tasks_scheduled"]),
    ("managers", TriggerManager._post_replay, ["task_instance"]),
    ("managers", TriggerManager._post_skip, ["task_instance", "cascade"]),
    ("storages", BaseTriggerStorage.create_instance, ["task_config"]),
    ("storages", BaseTriggerStorage.clone_instance, ["task_instance"]),
    ("storages", BaseTriggerStorage.instances_of_task, ["task_config"]),
    ("storages", BaseTriggerStorage.get_unresolved_tasks, []),
    ("storages", BaseTriggerStorage.get_unresolved_instances, []),
    ("storages", BaseTriggerStorage.get_instances_with_unresolved_logs, []),
    ("storages", BaseTriggerStorage._load_from_backend, []),
    ("storages", BaseTriggerStorage._save, []),
    ("inspecting", BaseTriggerStorage.debug_repr, []),
    ("runners", BaseTaskRunner.run, ["manager", "task_instance"]),
    ("tasks", TriggerTask.retry, ["exc", "cooldown", "replacement_kwargs"]),
    ("logs", TaskContext.get_logger_context, ["context"]),
    ("tasks", TaskContext.filter_kwargs, ["filters"]),
    ("logs", with_context, ["exc", "context"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceFinished, ["instance_name"]),
    (
        "testing",
        TriggerManagerTestCaseMixin.assertInstanceFinished,
        ["instance_name", "expected_result"],
    ),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceFailed, ["instance_name", "exc_type"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceAbandoned, ["instance_name"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceMissing, ["instance_name"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceReplayed, ["instance_name"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceSkipped, ["instance_name"]),
    ("testing", TriggerManagerTestCaseMixin.assertInstanceUnstarted, ["instance_name"]),
    ("testing", TriggerManagerTestCaseMixin.assertUnresolvedTasks, ["task_names"]),
    ("testing", TriggerManagerTestCaseMixin.assertUnresolvedInstances, ["instance_names"]),
]


@pytest.mark.parametrize(
    "page,func,names", SIGNATURES, ids=[f"{p}:{f.__qualname__}" for p, f, _ in SIGNATURES]
)
def test_documented_parameter_names(page: str, func: Any, names: list[str]) -> None:
    params = inspect.signature(func).parameters
    assert [n for n in names if n not in params] == []


def test_join_all_takes_no_arguments() -> None:
    ThreadingTaskRunner.join_all()


# -- names, keys and attributes -----------------------------------------------------


def test_registry_keys_and_entry_point_groups() -> None:
    # cookbook / managers / storages / runners pages
    assert TriggerManager.name == "default" and CacheStorageBackend.name == "cache"
    assert task_runners.get_class("celery").name == "celery"
    assert task_runners.get_class("threading").name == "threading"
    assert trigger_managers.get_class("default") is TriggerManager
    assert storage_backends.get_class("cache") is CacheStorageBackend
    groups = {trigger_managers.group, storage_backends.group, task_runners.group}
    assert groups == {"triggers.managers", "triggers.storages", "triggers.runners"}


def test_builtin_keys_are_entry_points_of_the_installed_package() -> None:
    # cookbook: "'default' and 'cache' can be found in the entry point definitions"
    from importlib.metadata import entry_points

    found = {
        group: {ep.name: ep.value for ep in entry_points(group=group)}
        for group in ("triggers.managers", "triggers.storages", "triggers.runners")
    }
    assert found["triggers.managers"]["default"] == "triggers.manager:TriggerManager"
    assert found["triggers.storages"]["cache"] == "triggers.storages.cache:CacheStorageBackend"
    assert {"celery", "threading"} <= set(found["triggers.runners"])


def test_statuses_are_the_documented_ones() -> None:
    # status page
    assert set(TaskInstance.STATUSES) == {
        "abandoned",
        "failed",
        "finished",
        "replayed",
        "running",
        "scheduled",
        "skipped",
        "unstarted",
    }


def config(**directives: Any) -> TaskConfig:
    return TaskConfig.from_directives("t_x", {"run": DEV, **directives})


def instance(status: str, **kwargs: Any) -> TaskInstance:
    return TaskInstance("t_x#0", config(after=["a"], unless=["u"]), status=status, **kwargs)


@pytest.mark.parametrize("status", sorted(TaskInstance.STATUSES))
def test_meta_statuses(status: str) -> None:
    # status page: which statuses are resolved, replayable, skippable...
    inst = instance(status)
    assert inst.is_resolved == (status in {"finished", "abandoned", "replayed", "skipped"})
    assert inst.can_replay == inst.can_skip == (status == "failed")
    assert inst.can_schedule == (status == "unstarted")
    assert inst.can_run is False  # 'a' has not fired
    assert inst.can_abandon is False  # 'u' has not fired


def test_can_run_and_can_abandon() -> None:
    assert instance("unstarted", kwargs={"a": {}}).can_run
    assert instance("unstarted", abandon_state={"u": {}}).can_abandon
    # "Returns False if the instance already has abandoned status"
    assert not instance("abandoned", abandon_state={"u": {}}).can_abandon


def test_log_level_is_notset_until_the_instance_ran() -> None:
    # logs page
    inst = instance("unstarted")
    assert (inst.log_level, inst.log_level_name) == (logging.NOTSET, "NOTSET")


# -- behaviours -------------------------------------------------------------------------


def test_basic_concepts_instances_kwargs_and_cascades(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_createApplicant": {"after": ["startSession", "observationsReceived"], "run": PASS},
            "t_computeScore": {"after": ["t_createApplicant", "sessionFinalized"], "run": PASS},
        }
    )
    manager.fire("startSession", {"document_id": 7})
    manager.fire("observationsReceived")
    manager.fire("sessionFinalized")
    settle()
    # Named after the task, with a sequence number; kwargs reach the task;
    # a finished task fires its own name with its result (cascade)
    assert statuses(manager.storage) == {
        "t_computeScore#0": "finished",
        "t_createApplicant#0": "finished",
    }
    result = manager.storage["t_computeScore#0"].metadata["result"]
    assert result["kwargs"]["t_createApplicant"] == {
        "kwargs": {"startSession": {"document_id": 7}, "observationsReceived": {}}
    }


def test_configuration_directives(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            # ``after`` may be a set
            "t_once": {"after": {"a", "b"}, "run": PASS},
            "t_every": {"after": ["a"], "andEvery": "page", "run": PASS},
            "t_unless": {"after": ["a", "b"], "unless": ["stop"], "run": PASS},
            "t_params": {
                "after": ["a"],
                "run": PASS,
                "withParams": {"scoring": {"model": "Psych 01"}},
                "owner": "ops",
            },
        }
    )
    assert manager.storage.tasks["t_params"].extras == {"owner": "ops"}
    manager.fire("stop")
    manager.fire("a")
    manager.fire("page", {"n": 1})
    manager.fire("page", {"n": 2})
    manager.fire("b")
    manager.fire("b")
    settle()
    assert statuses(manager.storage) == {
        "t_every#0": "finished",
        "t_every#1": "finished",
        "t_once#0": "finished",
        "t_params#0": "finished",
        "t_unless#0": "abandoned",
    }
    params = manager.storage["t_params#0"].metadata["result"]["kwargs"]
    assert params == {"a": {}, "scoring": {"model": "Psych 01"}}


def test_with_params_must_be_a_dict_of_dicts() -> None:
    # configuration page: the "not correct" example is refused
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    with pytest.raises(ValueError, match="withParams"):
        manager.update_configuration(
            {"t_x": {"after": ["a"], "run": DEV, "withParams": {"model": "Psych 01"}}}
        )


def test_run_names_the_celery_task_by_its_name() -> None:
    # configuration page: 'run': ImportSubject.name (the dotted path)
    assert FailingTask.name == "triggers.testing.FailingTask"


def test_inspecting_unresolved_tasks_and_instances(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {"t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": DEV}}
    )
    storage = manager.storage
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_importSubject"]
    assert storage.get_unresolved_instances() == []
    manager.fire("firstPageReceived")
    assert [i.name for i in storage.get_unresolved_instances()] == ["t_importSubject#0"]
    assert isinstance(storage.tasks["t_importSubject"], TaskConfig)
    assert isinstance(storage.instances["t_importSubject#0"], TaskInstance)
    # the task's name is not an instance name
    with pytest.raises(KeyError, match="t_importSubject"):
        storage.instances["t_importSubject"]
    # instances_of_task is a method (the page indexes it by mistake)
    assert [i.name for i in storage.instances_of_task("t_importSubject")] == ["t_importSubject#0"]
    assert set(storage.debug_repr()) >= {"tasks", "instances", "metadata"}


def test_error_recovery_replay_and_skip(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_importSubject": {"after": ["firstPageReceived"], "run": FailingTask.name},
            "t_next": {"after": ["t_importSubject"], "run": PASS},
            "t_other": {"after": ["firstPageReceived"], "run": FailingTask.name},
            "t_afterOther": {"after": ["t_other"], "run": PASS},
        }
    )
    manager.fire("firstPageReceived", {"responses": {"q": 1}})
    settle()
    storage = manager.storage
    failed = storage["t_importSubject#0"]
    # the exception and traceback are in the failed instance's metadata
    assert failed.metadata["exc_type"] == "builtins.RuntimeError"
    assert "Traceback" in failed.metadata["exc_traceback"]
    # replay with replacement kwargs (merged by hand, as the page shows)
    replacement_kwargs = failed.kwargs
    replacement_kwargs["firstPageReceived"] = {"responses": {"q": 2}}
    manager.replay_failed_instance(failed, replacement_kwargs)
    settle()
    assert storage["t_importSubject#0"].status == "replayed"
    clone = storage["t_importSubject#1"]
    assert clone.metadata["parent"] == "t_importSubject#0"
    assert clone.kwargs == {"firstPageReceived": {"responses": {"q": 2}}}
    # only failed instances can be replayed or skipped
    with pytest.raises(ValueError):
        manager.replay_failed_instance("t_importSubject#0")
    # skipping does not cascade by default...
    manager.skip_failed_instance("t_importSubject#1")
    assert storage["t_importSubject#1"].status == "skipped"
    assert "t_next#0" not in storage
    # ... unless asked, with a simulated result
    manager.skip_failed_instance(failed_instance="t_other#0", cascade=True, result={"s": 42})
    settle()
    assert storage["t_afterOther#0"].metadata["result"] == {"kwargs": {"t_other": {"s": 42}}}


class LogsAndFails(TriggerTask):
    def _run(self, context: TaskContext) -> dict[str, Any]:
        with context.get_logger_context({"app_version": "1.0"}) as logger:
            logger.warning("Missing givenNames", extra={"context": {"page_data": {}}})
            if context.trigger_kwargs.get("fail"):
                raise with_context(exc=ValueError("spam"), context={"spam_score": 3})
            return {}


def test_logs_levels_context_and_resolution(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_warn": {"after": ["go"], "run": LogsAndFails.name},
            "t_fail": {"after": ["fail"], "run": LogsAndFails.name},
        }
    )
    manager.fire("go")
    manager.fire("fail", {"x": 1})
    settle()
    storage = manager.storage
    assert (storage["t_warn#0"].log_level, storage["t_warn#0"].log_level_name) == (
        logging.WARNING,
        "WARNING",
    )
    failed = storage["t_fail#0"]
    assert failed.log_level == logging.ERROR
    assert failed.metadata["exc_context"] == {"spam_score": 3}
    assert [i.name for i in storage.get_instances_with_unresolved_logs()] == ["t_fail#0"]
    manager.mark_instance_logs_resolved("t_fail#0")
    assert storage.get_instances_with_unresolved_logs() == []


class HookOrder(TriggerManager):
    name = "tests-compat-docs-hooks"
    calls: list[tuple[str, str]] = []

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        self.calls.append(("fire", trigger_name))

    def _post_replay(self, task_instance: TaskInstance) -> None:
        self.calls.append(("replay", task_instance.metadata["parent"]))

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        self.calls.append(("skip", task_instance.name))


trigger_managers.register(HookOrder.name, HookOrder)


def test_manager_hooks_and_direct_updates() -> None:
    manager = HookOrder(CacheStorageBackend(new_uid()))
    manager.update_configuration({"t_x": {"after": ["a"], "run": DEV, "using": "tests-null"}})
    manager.fire("a")
    manager.update_instance_status("t_x#0", "failed", metadata={"why": "by hand"})
    manager.replay_failed_instance("t_x#0")
    manager.update_instance_status("t_x#1", "failed")
    manager.skip_failed_instance("t_x#1", cascade=True, result={"r": 1})
    manager.update_instance_metadata("t_x#1", {"note": "n"})
    # _post_skip comes after the cascade's _post_fire
    assert HookOrder.calls[-4:] == [
        ("fire", "a"),
        ("replay", "t_x#0"),
        ("fire", "t_x"),
        ("skip", "t_x#1"),
    ]
    assert manager.storage["t_x#0"].metadata["why"] == "by hand"
    assert manager.storage["t_x#1"].metadata["note"] == "n"
    # update_instance_status can cascade too
    manager.update_instance_status("t_x#1", "finished", cascade=True, cascade_kwargs={"k": 1})
    assert manager.storage.latest_kwargs["t_x"] == {"k": 1}


class NullRunner(BaseTaskRunner):
    name = "tests-null"

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        pass


task_runners.register(NullRunner.name, NullRunner)


class RetriesOnTimeout(TriggerTask):
    max_retries = 2

    def _run(self, context: TaskContext) -> dict[str, Any]:
        raise self.retry(exc=TimeoutError("3rd-party API"), cooldown=0)


class TestTestingPageRetryExample(TriggerManagerTestCaseMixin):
    def setup_method(self, method: Any = None) -> None:
        super().setup_method(method)
        self.manager = TriggerManager(CacheStorageBackend(new_uid("retries")))

    def test_retried_until_max_retries_then_failed_with_the_error(self) -> None:
        # testing page: replayed, replayed, then failed with the retried error
        self.manager.update_configuration(
            {"t_meta": {"after": ["go"], "run": RetriesOnTimeout.name}}
        )
        self.manager.fire("go")
        self.assertInstanceReplayed("t_meta#0")
        self.assertInstanceReplayed("t_meta#1")
        self.assertInstanceFailed("t_meta#2", TimeoutError)
        # tasks page: beyond max_retries it is a MaxRetriesExceeded
        self.assertInstanceFailed(instance_name="t_meta#2", exc_type=MaxRetriesExceeded)
        self.assertUnresolvedInstances(["t_meta#2"])
        self.assertUnresolvedTasks(["t_meta"])
        self.assertInstanceMissing("t_meta#3")


class FinalizingTriggerManager(TriggerManager):
    """The cookbook's recipe, with the page's mistake fixed
    (``self.storage.get_unresolved_tasks()``)."""

    name = "tests-compat-finalizing"
    TRIGGER_SESSION_FINALIZED = "sessionFinalized"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        if trigger_name == self.TRIGGER_SESSION_FINALIZED:
            return
        if self.TRIGGER_SESSION_FINALIZED in self.storage.latest_kwargs:
            return
        for config in self.storage.get_unresolved_tasks():
            if self.TRIGGER_SESSION_FINALIZED not in config.after:
                return
        self.fire(self.TRIGGER_SESSION_FINALIZED)


trigger_managers.register(FinalizingTriggerManager.name, FinalizingTriggerManager)


def test_cookbook_finalizing_and_runtime_types(threaded: None) -> None:
    uid = f"applicant:{new_uid()}"  # namespaced session UID
    storage = storage_backends.get("cache", uid)
    manager = trigger_managers.get(FinalizingTriggerManager.name, storage)
    manager.update_configuration(
        {
            "t_a": {"after": ["a"], "run": DEV},
            "t_final": {"after": ["sessionFinalized"], "run": DEV},
        }
    )
    manager.fire("a")
    settle()
    assert statuses(manager.storage) == {"t_a#0": "finished", "t_final#0": "finished"}


class ImportSubjectWithFilters(TriggerTask):
    """The tasks page's filter_kwargs example, as written there."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        import filters as f

        filtered_kwargs = context.filter_kwargs(
            {
                "firstPageReceived": {
                    "responses": f.Required
                    | f.Type(dict)
                    | f.FilterMapper(
                        {
                            "birthday": f.Required | f.Date,
                            "name": f.Required | f.Unicode,
                        }
                    ),
                },
            }
        )
        page_data = filtered_kwargs["firstPageReceived"]["responses"]
        return {"birthday": page_data["birthday"].isoformat(), "name": page_data["name"]}


def test_tasks_page_filter_kwargs_example(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_good": {"after": ["firstPageReceived"], "run": ImportSubjectWithFilters.name},
        }
    )
    manager.fire("firstPageReceived", {"responses": {"birthday": "1990-04-01", "name": "Ada"}})
    settle()
    result = manager.storage["t_good#0"].metadata["result"]
    assert result == {"birthday": "1990-04-01", "name": "Ada"}
    # Invalid input fails the instance
    manager.update_configuration(
        {"t_bad": {"after": ["secondPage"], "run": ImportSubjectWithFilters.name}}
    )
    manager.fire("secondPage")
    settle()
    assert manager.storage["t_bad#0"].status == "failed"
