"""Registries and entry points (SPEC §9)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from tests.contract_backends import (
    PASS,
    DictStorage,
    new_uid,
    settle,
)
from triggers.manager import TriggerManager, trigger_managers
from triggers.runners import task_runners
from triggers.runners.base import BaseTaskRunner
from triggers.runners.celery import CeleryTaskRunner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages import storage_backends
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance

#: Triggers the AuditManager saw, per session (hooks run in task threads too).
AUDIT: dict[str, list[str]] = {}


@trigger_managers.register("tests-audit")
class AuditManager(TriggerManager):
    """A registered custom manager whose hook must also run inside tasks."""

    name = "tests-audit"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        AUDIT.setdefault(self.storage.uid, []).append(trigger_name)


@pytest.mark.parametrize(
    "registry, key, cls",
    [
        (trigger_managers, "default", TriggerManager),
        (storage_backends, "cache", CacheStorageBackend),
        (task_runners, "celery", CeleryTaskRunner),
        (task_runners, "threading", ThreadingTaskRunner),
    ],
)
def test_builtin_keys(registry: Any, key: str, cls: type) -> None:
    assert key in registry
    assert registry.get_class(key) is cls
    assert cls.name == key
    assert registry.key_for(cls) == key


def test_get_builds_an_instance_passing_args_and_kwargs() -> None:
    uid = new_uid()
    storage = storage_backends.get("cache", uid, cache="djredis", timeout=None)
    assert isinstance(storage, CacheStorageBackend)
    assert (storage.uid, storage.cache_name, storage.timeout) == (uid, "djredis", None)
    manager = trigger_managers.get("default", storage)
    assert type(manager) is TriggerManager and manager.storage is storage
    runner = task_runners.get("threading")
    assert isinstance(runner, ThreadingTaskRunner) and isinstance(runner, BaseTaskRunner)


@pytest.mark.parametrize(
    "group, key, cls",
    [
        ("triggers.managers", "default", TriggerManager),
        ("triggers.storages", "cache", CacheStorageBackend),
        ("triggers.runners", "celery", CeleryTaskRunner),
        ("triggers.runners", "threading", ThreadingTaskRunner),
    ],
)
def test_installed_package_declares_entry_points(group: str, key: str, cls: type) -> None:
    # The installed distribution's metadata lists the built-ins in each group
    found = {ep.name: ep for ep in entry_points(group=group)}
    assert key in found
    assert found[key].load() is cls


def test_registry_groups() -> None:
    assert trigger_managers.group == "triggers.managers"
    assert storage_backends.group == "triggers.storages"
    assert task_runners.group == "triggers.runners"


def test_unknown_key_is_a_key_error_listing_known_keys() -> None:
    with pytest.raises(KeyError) as info:
        task_runners.get("carrier-pigeon")
    assert "carrier-pigeon" in str(info.value)
    assert "threading" in str(info.value)
    with pytest.raises(KeyError, match="cannot import"):
        trigger_managers.get("no.such.module.Manager")


def test_dotted_path_fallback_rebuilds_an_unregistered_class() -> None:
    # An unregistered custom backend is rebuilt from its dotted path
    key = storage_backends.key_for(DictStorage)
    assert key == "tests.contract_backends.DictStorage"
    rebuilt = storage_backends.get(key, "some-uid")
    assert isinstance(rebuilt, DictStorage) and rebuilt.uid == "some-uid"


def test_register_a_custom_manager() -> None:
    assert "tests-audit" in trigger_managers
    assert trigger_managers.get_class("tests-audit") is AuditManager
    assert trigger_managers.key_for(AuditManager) == "tests-audit"
    built = trigger_managers.get("tests-audit", CacheStorageBackend(new_uid()))
    assert isinstance(built, AuditManager)


def test_register_as_a_plain_call() -> None:
    class QuietRunner(BaseTaskRunner):
        name = "tests-quiet"

        def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
            pass

    assert task_runners.register("tests-quiet", QuietRunner) is QuietRunner
    assert isinstance(task_runners.get("tests-quiet"), QuietRunner)


@pytest.mark.usefixtures("threaded")
def test_a_registered_manager_keeps_its_behaviour_inside_tasks() -> None:
    # Given a session driven by the registered custom manager
    manager = AuditManager(CacheStorageBackend(new_uid()))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": PASS},
            "t_second": {"after": ["t_first"], "run": PASS},
        }
    )
    # When a trigger fires and the tasks cascade in task threads
    manager.fire("start")
    settle()
    # Then the cascades were fired by AuditManagers rebuilt from the registry key
    assert AUDIT[manager.storage.uid] == ["start", "t_first", "t_second"]


# -- hardening (issue 9 item 5) ---------------------------------------------------


@pytest.mark.parametrize(
    "registry, key",
    [
        (storage_backends, "os.system"),
        (storage_backends, "builtins.eval"),
        (trigger_managers, "subprocess.Popen"),
        (task_runners, "triggers.manager.TriggerManager"),
        (trigger_managers, "tests.test_registry.AUDIT"),
        (trigger_managers, "tests.test_registry.<locals>.X"),
    ],
)
def test_a_key_that_names_anything_but_a_subclass_is_refused(registry: Any, key: str) -> None:
    with pytest.raises(KeyError) as info:
        registry.get(key, "ignored")
    assert key in str(info.value)


def test_only_subclasses_of_the_base_can_be_registered() -> None:
    with pytest.raises(KeyError, match="not a subclass"):
        trigger_managers.register("tests-not-a-manager", dict)
    assert "tests-not-a-manager" not in trigger_managers


def test_keys_from_messages_never_import_a_module() -> None:
    import sys

    assert "tests.fault_planted" not in sys.modules
    with pytest.raises(KeyError, match="cannot import"):
        trigger_managers.get_class("tests.fault_planted.PlantedManager", load_modules=False)
    assert "tests.fault_planted" not in sys.modules


def test_a_worker_falls_back_to_the_nearest_registered_ancestor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class LocalAudit(AuditManager):
        pass

    assert not trigger_managers.rebuildable(LocalAudit)
    assert trigger_managers.fallbacks_for(LocalAudit) == ["tests-audit", "default"]
    key = trigger_managers.key_for(LocalAudit)
    with caplog.at_level("WARNING"):
        found = trigger_managers.get_class_or_fallback(key, ["tests-audit", "default"])
    assert found is AuditManager
    assert any("registered ancestor 'tests-audit'" in r.getMessage() for r in caplog.records)
