"""Code written for the original framework's documented API runs unchanged
(issue 8; SPEC §13). Each test follows a page of
``reference/original-docs``; tests/test_compat_docs.py covers the rest of
those pages fact by fact."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import triggers
from tests.contract_backends import (
    DEV,
    PASS,
    make_storage,
    new_uid,
    raw_state,
    settle,
    statuses,
)
from tests.managers import (
    init_spawned_process,
    read_events,
    redis_client,
    runs_key,
    start_together,
)
from tests.tasks import RecordingTask
from tests.utils import wait_for
from triggers import runners
from triggers.exceptions import NotLockedError
from triggers.manager import TriggerManager
from triggers.runners import task_runners
from triggers.runners.base import BaseTaskRunner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.task import MaxRetriesExceeded, TaskContext, TriggerTask
from triggers.testing import FailingTask, TriggerManagerTestCaseMixin
from triggers.types import TaskConfig, TaskInstance

ROOT = Path(__file__).resolve().parent.parent

# -- item 1: names from the package root, lazily ------------------------------

ROOT_NAMES = {
    "TriggerManager": "triggers.manager",
    "trigger_managers": "triggers.manager",
    "BaseTriggerStorage": "triggers.storages.base",
    "CacheStorageBackend": "triggers.storages.cache",
    "storage_backends": "triggers.storages",
}


def test_importing_the_package_needs_no_django_settings() -> None:
    # Given a process with no DJANGO_SETTINGS_MODULE and no Django setup
    code = (
        "import sys, triggers\n"
        "assert 'triggers.manager' not in sys.modules, 'imported eagerly'\n"
        "assert 'django.conf' not in sys.modules or not sys.modules['django.conf']"
        ".settings.configured\n"
        "print(sorted(triggers.__all__))\n"
        "print(sorted(set(dir(triggers)) & set(triggers.__all__)))\n"
        "try:\n"
        "    triggers.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    # When it imports triggers (as a settings module would)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    # Then that works, and the root names are listed without being loaded
    assert done.returncode == 0, done.stderr
    listed, in_dir, error = done.stdout.splitlines()
    assert set(ROOT_NAMES) <= set(json.loads(listed.replace("'", '"')))
    assert listed == in_dir
    assert "has no attribute 'NoSuchName'" in error


@pytest.mark.parametrize("name", sorted(ROOT_NAMES))
def test_root_names_are_the_library_objects_once_django_is_set_up(name: str) -> None:
    module = __import__(ROOT_NAMES[name], fromlist=[name])
    assert getattr(triggers, name) is getattr(module, name)
    assert name in triggers.__all__ and name in dir(triggers)


def test_star_import_and_the_getting_started_import() -> None:
    namespace: dict[str, Any] = {}
    exec("from triggers import *", namespace)
    assert set(triggers.__all__) <= set(namespace)
    exec("from triggers import TriggerManager, CacheStorageBackend", namespace)
    manager = namespace["TriggerManager"](namespace["CacheStorageBackend"](new_uid()))
    assert isinstance(manager, TriggerManager)


# -- item 2: iter(storage) yields TaskInstance objects --------------------------


@pytest.mark.parametrize("kind", ["builtin-redis", "locmem", "custom"])
def test_iterating_a_storage_yields_task_instances(kind: str, threaded: None) -> None:
    manager = TriggerManager(make_storage(kind, new_uid()))
    manager.update_configuration({"t_a": {"after": ["a"], "andEvery": "a", "run": DEV}})
    manager.fire("a")
    manager.fire("a")
    settle()
    found = list(iter(manager.storage))
    assert all(isinstance(inst, TaskInstance) for inst in found)
    assert [inst.name for inst in found] == ["t_a#0", "t_a#1"]
    assert [inst.status for inst in manager.storage] == ["finished", "finished"]


# -- item 3: acquire_lock() yields a writable storage ---------------------------

LOCK_KINDS = ["builtin-redis", "locmem", "custom", "database"]


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_the_original_lock_recipe_creates_clones_and_edits_in_one_write(kind: str) -> None:
    uid = new_uid()
    storage = make_storage(kind, uid)
    TriggerManager(storage).update_configuration(
        {"t_a": {"after": ["a", "b"], "run": DEV}, "t_b": {"after": ["c"], "run": DEV}}
    )
    other = make_storage(kind, uid)
    before = raw_state(other)
    # When code written for the original works on the session under its lock
    with storage.acquire_lock() as writable:
        assert writable is storage
        inst = writable.create_instance(task_config=writable.tasks["t_a"])
        inst.status = TaskInstance.STATUS_FAILED
        inst.metadata["note"] = "made by hand"
        clone = writable.clone_instance(inst)
        third = writable.create_instance("t_b", kwargs={"c": {"n": 1}})
        writable["t_b#0"].metadata["edited"] = True
        writable.save()
        # Then the block sees its own objects and changes...
        assert writable["t_a#0"] is inst and writable.instances["t_a#1"] is clone
        assert [i.name for i in writable] == ["t_a#0", "t_a#1", "t_b#0"]
        assert writable.metadata["counters"] == {"t_a": 2, "t_b": 1}
        assert third.kwargs == {"c": {"n": 1}}
        # ... while nothing is written yet
        assert raw_state(other) == before
    # And all of it is written when the block exits
    assert statuses(other) == {"t_a#0": "failed", "t_a#1": "unstarted", "t_b#0": "unstarted"}
    assert other["t_a#0"].metadata["note"] == "made by hand"
    assert other["t_a#1"].metadata["parent"] == "t_a#0"
    assert other["t_b#0"].metadata["edited"] is True
    # ... and the manager carries on from there (the clone takes the next fires)
    manager = TriggerManager(other)
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    assert [i.name for i in manager.fire("a")] == []
    assert other["t_a#1"].kwargs == {"a": {}}


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_edits_of_instances_read_in_the_block_are_written_by_save(kind: str) -> None:
    uid = new_uid()
    manager = TriggerManager(make_storage(kind, uid))
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    with manager.storage.acquire_lock() as writable:
        for inst in writable:
            inst.metadata["seen"] = True
        writable.instances["t_a#0"].status = TaskInstance.STATUS_ABANDONED
        writable.save()
    inst = make_storage(kind, uid)["t_a#0"]
    assert (inst.status, inst.metadata["seen"]) == ("abandoned", True)
    # An abandoned instance no longer waits: the next fire creates nothing new
    manager.fire("b")
    assert statuses(manager.storage) == {"t_a#0": "abandoned"}


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_an_exception_in_the_block_writes_nothing(kind: str) -> None:
    uid = new_uid()
    storage = make_storage(kind, uid)
    TriggerManager(storage).update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    before = raw_state(storage)
    with pytest.raises(KeyError):
        with storage.acquire_lock() as writable:
            writable.create_instance(writable.tasks["t_a"]).status = "failed"
            writable.save()
            writable["t_a#7"]  # no such instance
    assert raw_state(storage) == before
    # And the lock was released
    with storage.acquire_lock() as writable:
        assert writable.instances == {}


def test_save_outside_a_lock_block_is_refused_with_a_clear_error() -> None:
    storage = CacheStorageBackend(new_uid())
    with pytest.raises(NotLockedError, match="acquire_lock"):
        storage.save()
    assert storage.lock is None


# Runs in spawned processes.
def _race_key(uid: str) -> str:
    return f"triggers-tests:compat-race:{uid}"


def _race_fire(uid: str, triggers_: list[str]) -> dict[str, Any]:
    manager = TriggerManager(CacheStorageBackend(uid))
    start_together()
    # Start firing once the other process holds the lock, and say so
    client = redis_client()
    wait_for(lambda: client.exists(_race_key(uid) + ":held"), timeout=60)
    client.rpush(_race_key(uid) + ":firing", os.getpid())
    scheduled = []
    for trigger in triggers_:
        scheduled += [i.name for i in manager.fire(trigger, {"pid": os.getpid()})]
    return {"scheduled": scheduled}


def _race_lock_block(uid: str) -> dict[str, Any]:
    storage = CacheStorageBackend(uid)
    manager = TriggerManager(storage)
    client = redis_client()
    start_together()
    with storage.acquire_lock() as writable:
        # Hold the lock until every other process is trying to fire
        client.set(_race_key(uid) + ":held", 1, ex=300)
        wait_for(lambda: client.llen(_race_key(uid) + ":firing") == 3, timeout=60)
        fired_before = sorted(CacheStorageBackend(uid).latest_kwargs)
        inst = writable.create_instance(task_config=writable.tasks["t_manual"])
        inst.metadata["note"] = "made under the lock"
        clone = writable.clone_instance(inst.name)
        # A fire inside the block joins it (same lock, same single write)
        scheduled = [i.name for i in manager.fire("p_lock", {"pid": os.getpid()})]
        inst.status = TaskInstance.STATUS_SKIPPED
        writable.save()
        # Another reader (not in the block) still sees what it saw at the start
        fired_after = sorted(CacheStorageBackend(uid).latest_kwargs)
    return {
        "before": fired_before,
        "after": fired_after,
        "clone": clone.name,
        "scheduled": scheduled,
    }


@pytest.fixture(scope="module")
def race_pool() -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    with ProcessPoolExecutor(
        4, mp_context=context, initializer=init_spawned_process, initargs=(barrier,)
    ) as pool:
        yield pool


def test_a_lock_block_racing_fires_from_other_processes_keeps_exactly_once(
    celery_worker: Any, race_pool: ProcessPoolExecutor, unique_uid: str
) -> None:
    # Given a task waiting on 60 triggers (one of them fired inside a lock block)
    parts = [f"p{n:02d}" for n in range(59)] + ["p_lock"]
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_all": {"after": parts, "run": RecordingTask.name},
            "t_manual": {"after": ["never"], "run": RecordingTask.name},
        }
    )
    # When 3 processes fire the rest while a 4th works in acquire_lock()
    batches = [parts[:59][i::3] for i in range(3)]
    fires = [race_pool.submit(_race_fire, unique_uid, batch) for batch in batches]
    block = race_pool.submit(_race_lock_block, unique_uid)
    reports = [f.result(timeout=120) for f in fires]
    locked = block.result(timeout=120)

    # Then no other fire got in while the block held the lock
    assert locked["before"] == locked["after"] == []
    redis_client().delete(_race_key(unique_uid) + ":held", _race_key(unique_uid) + ":firing")
    # ... the waiting task was scheduled by exactly one fire and ran once
    scheduled = [n for r in reports for n in r["scheduled"]] + locked["scheduled"]
    assert scheduled == ["t_all#0"]
    runs = wait_for(lambda: read_events(runs_key(unique_uid)), timeout=30)
    assert [r["instance"] for r in runs] == ["t_all#0"]
    wait_for(lambda: manager.storage["t_all#0"].status == "finished", timeout=30)
    # ... and everything the block did was written, numbered without clashes
    storage = CacheStorageBackend(unique_uid)
    assert statuses(storage) == {
        "t_all#0": "finished",
        "t_manual#0": "skipped",
        "t_manual#1": "unstarted",
    }
    assert storage["t_manual#0"].metadata["note"] == "made under the lock"
    assert storage["t_manual#1"].metadata["parent"] == "t_manual#0"
    assert set(storage.latest_kwargs) == {*parts, "t_all"}


# -- items 5 and 7: the test mixin ----------------------------------------------


class RecordingRunner(BaseTaskRunner):
    """Runs nothing; remembers what it was handed."""

    name = "tests-compat-recording"
    seen: list[str] = []

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        self.seen.append(f"{manager.storage.uid}/{task_instance.name}")


task_runners.register(RecordingRunner.name, RecordingRunner)


class TestMixinReplacesOnlyTheDefaultRunner(TriggerManagerTestCaseMixin):
    def setup_method(self, method: Any = None) -> None:
        super().setup_method(method)
        self.manager = TriggerManager(CacheStorageBackend(new_uid("mixin")))

    def test_using_keeps_its_runner_and_the_rest_run_in_threads(self) -> None:
        self.manager.update_configuration(
            {
                "t_default": {"after": ["go"], "run": PASS},
                "t_custom": {"after": ["go"], "run": PASS, "using": RecordingRunner.name},
            }
        )
        self.manager.fire("go")
        self.assertInstanceFinished("t_default#0", {"kwargs": {"go": {}}})
        uid = self.manager.storage.uid
        assert f"{uid}/t_custom#0" in RecordingRunner.seen
        assert f"{uid}/t_default#0" not in RecordingRunner.seen
        assert self.manager.storage["t_custom#0"].status == "scheduled"

    def test_failing_task_raises_runtime_error(self) -> None:
        self.manager.update_configuration({"t_fail": {"after": ["go"], "run": FailingTask.name}})
        self.manager.fire("go")
        self.assertInstanceFailed("t_fail#0", RuntimeError)


# -- item 6: DEFAULT_TASK_RUNNER reassigned at runtime ---------------------------


class UnregisteredRecordingRunner(RecordingRunner):
    name = ""
    seen: list[str] = []


class OwnDefaultManager(TriggerManager):
    name = "tests-compat-own-default"
    default_task_runner_name = RecordingRunner.name


def test_reassigned_default_task_runner_key_is_used_at_dispatch(monkeypatch) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration({"t_x": {"after": ["go"], "run": PASS}})
    # When the application makes threads the default after the manager exists
    monkeypatch.setattr(runners, "DEFAULT_TASK_RUNNER", "threading")
    assert manager.default_task_runner_name == "threading"
    manager.fire("go")
    ThreadingTaskRunner.join_all()
    # Then the task ran in this process
    assert manager.storage["t_x#0"].status == "finished"


def test_reassigned_default_task_runner_class_is_used_and_using_wins(monkeypatch) -> None:
    monkeypatch.setattr(runners, "DEFAULT_TASK_RUNNER", UnregisteredRecordingRunner)
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_default": {"after": ["go"], "run": PASS},
            "t_threads": {"after": ["go"], "run": PASS, "using": "threading"},
        }
    )
    manager.fire("go")
    ThreadingTaskRunner.join_all()
    uid = manager.storage.uid
    assert UnregisteredRecordingRunner.seen == [f"{uid}/t_default#0"]
    assert statuses(manager.storage) == {"t_default#0": "scheduled", "t_threads#0": "finished"}
    # A manager that names its own default runner keeps it
    own = OwnDefaultManager(CacheStorageBackend(new_uid()))
    own.update_configuration({"t_default": {"after": ["go"], "run": PASS}})
    own.fire("go")
    assert f"{own.storage.uid}/t_default#0" in RecordingRunner.seen


def test_reassigning_default_task_runner_beats_the_setting(monkeypatch, settings) -> None:
    settings.TRIGGERS = {**settings.TRIGGERS, "DEFAULT_RUNNER": RecordingRunner.name}
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration({"t_x": {"after": ["go"], "run": PASS}})
    assert manager.default_task_runner_name == RecordingRunner.name
    monkeypatch.setattr(runners, "DEFAULT_TASK_RUNNER", "threading")
    manager.fire("go")
    ThreadingTaskRunner.join_all()
    assert manager.storage["t_x#0"].status == "finished"


# -- item 8: MaxRetriesExceeded inside _run -----------------------------------------


class GivesUpAfterOneRetry(TriggerTask):
    max_retries = 1

    def _run(self, context: TaskContext) -> dict[str, Any]:
        try:
            raise self.retry(exc=ConnectionError("api down"), cooldown=0)
        except MaxRetriesExceeded as exc:
            return {
                "gave_up_at": context.task_instance.metadata.get("depth", 0),
                "cause": type(exc.__cause__).__name__,
            }


def test_a_task_can_catch_max_retries_exceeded(threaded: None) -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration({"t_api": {"after": ["go"], "run": GivesUpAfterOneRetry.name}})
    manager.fire("go")
    settle()
    assert statuses(manager.storage) == {"t_api#0": "replayed", "t_api#1": "finished"}
    result = manager.storage["t_api#1"].metadata["result"]
    assert result == {"gave_up_at": 1, "cause": "ConnectionError"}


# -- item 9: a backend written as the original storages page describes -------------

#: uid -> the three parts, each stored as JSON text
DOCS_STYLE_DATABASE: dict[str, dict[str, str]] = {}


class DocsStyleStorage(BaseTriggerStorage):
    """``_load_from_backend`` returns the plain stored dicts, as the original's
    cache backend did; ``_save`` stores ``_serialize``'d parts separately."""

    name = "tests-docs-style"

    def _load_from_backend(self) -> tuple[Any, Any, Any]:
        stored = DOCS_STYLE_DATABASE.get(self.uid, {})
        return tuple(json.loads(stored.get(part, "{}")) for part in ("tasks", "instances", "meta"))

    def _save(self) -> None:
        DOCS_STYLE_DATABASE[self.uid] = {
            "tasks": json.dumps(self._serialize(self._configs)),
            "instances": json.dumps(self._serialize(self._instances)),
            "meta": json.dumps(self._serialize(self._metas)),
        }


def test_a_backend_returning_plain_stored_dicts_runs_a_workflow(threaded: None) -> None:
    manager = TriggerManager(DocsStyleStorage(new_uid()))
    manager.update_configuration(
        {
            "t_first": {"after": ["a", "b"], "run": PASS},
            "t_second": {"after": ["t_first"], "run": DEV},
            "t_fail": {"after": ["a"], "run": FailingTask.name},
        }
    )
    manager.fire("a", {"n": 1})
    manager.fire("b")
    settle()
    manager.replay_failed_instance("t_fail#0")
    settle()
    storage = manager.storage
    assert statuses(storage) == {
        "t_fail#0": "replayed",
        "t_fail#1": "failed",
        "t_first#0": "finished",
        "t_second#0": "finished",
    }
    assert isinstance(storage.tasks["t_first"], TaskConfig)
    assert storage["t_first#0"].metadata["result"] == {"kwargs": {"a": {"n": 1}, "b": {}}}
    assert storage.latest_kwargs["a"] == {"n": 1}


# -- item 10: reprs as the original showed them ---------------------------------------


def test_task_config_repr_is_the_documented_one() -> None:
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {"t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": DEV}}
    )
    assert repr(manager.storage.get_unresolved_tasks()) == "[<TaskConfig 't_importSubject'>]"
