"""Which runner dispatch picks, for every way a manager can name its default:
the quick look-up in the class dictionaries must agree with inspect's."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tests.contract_backends import new_uid
from triggers import runners
from triggers.config import validate_configuration
from triggers.dispatch import CurrentDefaultRunner, runner_choice
from triggers.manager import TriggerManager
from triggers.runners import base as runners_base
from triggers.runners.base import default_runner, forced_runner
from triggers.storages.cache import CacheStorageBackend

PLAIN = validate_configuration({"t": {"after": ["a"], "run": "triggers.testing.PassThruTask"}})["t"]
USING = validate_configuration(
    {"t": {"after": ["a"], "run": "triggers.testing.PassThruTask", "using": "threading"}}
)["t"]


def as_inspect_says(manager: Any, config: Any) -> Any:
    """The choice as dispatch made it before, through inspect.getattr_static."""
    if forced_runner():
        return forced_runner()
    if config.using:
        return config.using
    own = inspect.getattr_static(manager, "default_task_runner_name")
    if isinstance(own, CurrentDefaultRunner):
        return default_runner()
    return manager.default_task_runner_name


class NamesItsOwn(TriggerManager):
    default_task_runner_name = "threading"


class Inherits(NamesItsOwn):
    pass


class BackToTheDefault(NamesItsOwn):
    default_task_runner_name = CurrentDefaultRunner()


class Computed(TriggerManager):
    @property
    def default_task_runner_name(self) -> str:  # type: ignore[override]
        return "threading"


def managers() -> list[tuple[str, TriggerManager]]:
    overridden = TriggerManager(CacheStorageBackend(new_uid()))
    overridden.default_task_runner_name = "threading"
    back = NamesItsOwn(CacheStorageBackend(new_uid()))
    back.default_task_runner_name = CurrentDefaultRunner()
    return [
        ("plain", TriggerManager(CacheStorageBackend(new_uid()))),
        ("instance sets a key", overridden),
        ("instance holds the descriptor", back),
        ("class names its own", NamesItsOwn(CacheStorageBackend(new_uid()))),
        ("inherited from a class that names its own", Inherits(CacheStorageBackend(new_uid()))),
        ("subclass back to the default", BackToTheDefault(CacheStorageBackend(new_uid()))),
        ("property", Computed(CacheStorageBackend(new_uid()))),
    ]


@pytest.mark.parametrize("config", [PLAIN, USING], ids=["no using", "using"])
def test_runner_choice_agrees_with_inspect_for_every_kind_of_manager(config, monkeypatch):
    for label, manager in managers():
        assert runner_choice(manager, config) == as_inspect_says(manager, config), label
    # And after the application reassigns the default, on the package or on
    # the module that defines it
    monkeypatch.setattr(runners, "DEFAULT_TASK_RUNNER", "threading")
    for label, manager in managers():
        assert runner_choice(manager, config) == as_inspect_says(manager, config), label
    monkeypatch.undo()
    monkeypatch.setattr(runners_base, "DEFAULT_TASK_RUNNER", "threading")
    for label, manager in managers():
        assert runner_choice(manager, config) == as_inspect_says(manager, config), label


def test_what_each_kind_of_manager_picks():
    picked = {label: runner_choice(manager, PLAIN) for label, manager in managers()}
    assert picked == {
        "plain": "celery",
        "instance sets a key": "threading",
        "instance holds the descriptor": "celery",
        "class names its own": "threading",
        "inherited from a class that names its own": "threading",
        "subclass back to the default": "celery",
        "property": "threading",
    }


def test_a_class_default_changed_at_run_time_is_seen_at_once(monkeypatch):
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    assert runner_choice(manager, PLAIN) == "celery"
    monkeypatch.setattr(TriggerManager, "default_task_runner_name", "threading")
    assert runner_choice(manager, PLAIN) == "threading"
    monkeypatch.undo()
    assert runner_choice(manager, PLAIN) == "celery"
