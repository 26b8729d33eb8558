"""update_configuration (SPEC §2): directives, TaskConfig, replacing tasks and
rejecting bad configuration without storing anything."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract_backends import (
    BAD_CONFIGS,
    DEV,
    PASS,
    populate,
    raw_state,
    settle,
    statuses,
)
from triggers.exceptions import ConfigurationError, TriggersError
from triggers.manager import TriggerManager
from triggers.types import TaskConfig

pytestmark = pytest.mark.usefixtures("threaded")


def test_every_directive_is_kept_on_the_task_config(manager: TriggerManager) -> None:
    # Given a task using every directive plus two custom ones
    manager.update_configuration(
        {
            "t_all": {
                "after": ["a", "b"],
                "run": DEV,
                "andEvery": "c",
                "unless": ["x", "y"],
                "withParams": {"a": {"k": 1, "nested": {"deep": True}}},
                "using": "threading",
                "priority": 5,
                "owner": {"team": "ops", "tags": ["x"]},
            }
        }
    )
    # When the config is read back (from the backend, as another process would)
    cfg = manager.storage.tasks["t_all"]
    # Then every directive is there, custom ones verbatim in extras
    assert isinstance(cfg, TaskConfig)
    assert cfg.name == "t_all"
    assert cfg.after == {"a", "b", "c"}  # andEvery is also an `after` trigger
    assert cfg.run == DEV
    assert cfg.and_every == "c"
    assert cfg.unless == {"x", "y"}
    assert cfg.with_params == {"a": {"k": 1, "nested": {"deep": True}}}
    assert cfg.using == "threading"
    assert cfg.extras == {"priority": 5, "owner": {"team": "ops", "tags": ["x"]}}
    for trigger in ("a", "b", "c", "x", "y"):
        assert cfg.uses_trigger(trigger)
    assert not cfg.uses_trigger("t_all")
    assert not cfg.uses_trigger("z")


def test_after_accepts_a_set_and_optional_directives_have_defaults(
    manager: TriggerManager,
) -> None:
    # Given the smallest valid task, with `after` given as a set
    manager.update_configuration({"t_min": {"after": {"a", "b"}, "run": DEV}})
    # Then the optional directives are empty
    cfg = manager.storage.tasks["t_min"]
    assert cfg.after == {"a", "b"}
    assert cfg.and_every is None
    assert cfg.unless == set()
    assert cfg.with_params == {}
    assert cfg.using is None
    assert cfg.extras == {}


def test_run_accepts_the_task_class_name_attribute(manager: TriggerManager) -> None:
    # Given a task configured with `ImportTask.name` rather than a literal path
    from triggers.testing import PassThruTask

    manager.update_configuration({"t_x": {"after": ["a"], "run": PassThruTask.name}})
    # When its trigger fires
    manager.fire("a", {"v": 1})
    settle()
    # Then it ran
    assert manager.storage["t_x#0"].metadata["result"] == {"kwargs": {"a": {"v": 1}}}


def test_replacing_a_task_keeps_the_others(manager: TriggerManager) -> None:
    # Given two tasks
    manager.update_configuration(
        {
            "t_one": {"after": ["a"], "run": DEV},
            "t_two": {"after": ["b"], "run": DEV, "priority": 1},
        }
    )
    # When one of them is configured again with new directives
    manager.update_configuration({"t_two": {"after": ["c"], "run": PASS}})
    # Then it is replaced entirely and the other is untouched
    tasks = manager.storage.tasks
    assert sorted(tasks) == ["t_one", "t_two"]
    assert tasks["t_one"].after == {"a"}
    assert tasks["t_two"].after == {"c"}
    assert tasks["t_two"].run == PASS
    assert tasks["t_two"].extras == {}
    # And the replaced task reacts to its new trigger, not its old one
    assert manager.fire("b") == []
    assert [i.name for i in manager.fire("c")] == ["t_two#0"]


def test_configuring_does_not_reapply_earlier_triggers(manager: TriggerManager) -> None:
    # Given triggers fired before any task mentions them
    manager.fire("a", {"v": 1})
    manager.fire("b")
    # When a task waiting for exactly those triggers is configured
    manager.update_configuration({"t_late": {"after": ["a", "b"], "run": DEV}})
    settle()
    # Then nothing was created or scheduled by configuring it
    assert manager.storage.instances == {}
    assert [t.name for t in manager.storage.get_unresolved_tasks()] == ["t_late"]


def test_reconfiguring_does_not_reapply_triggers_to_existing_instances(
    manager: TriggerManager,
) -> None:
    # Given an instance waiting for `b`, and trigger `c` fired earlier
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    manager.fire("c")
    # When the task is replaced to wait for `a` and `c` (both already fired)
    manager.update_configuration({"t_x": {"after": ["a", "c"], "run": DEV}})
    settle()
    # Then the existing instance is still waiting: `c` is not re-applied
    assert statuses(manager.storage) == {"t_x#0": "unstarted"}
    assert manager.storage["t_x#0"].missing_triggers == {"c"}


@pytest.mark.parametrize(
    "configuration, task, directive, suggestion",
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_configuration_is_rejected_naming_task_and_directive(
    manager: TriggerManager,
    configuration: dict[Any, Any],
    task: str,
    directive: str | None,
    suggestion: str | None,
) -> None:
    # Given a session that already holds configuration, triggers and instances
    populate(manager)
    before = raw_state(manager.storage)
    before_repr = manager.storage.debug_repr()
    # When a bad configuration is given
    with pytest.raises(ConfigurationError) as info:
        manager.update_configuration(configuration)
    # Then the error is a ValueError from the library naming task and directive
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, TriggersError)
    assert error.task == task
    assert error.directive == directive
    assert error.suggestion == suggestion
    assert repr(task) in str(error)
    if directive is not None:
        assert repr(directive) in str(error)
    if suggestion is not None:
        assert f"did you mean {suggestion!r}" in str(error)
    # And the stored session is byte-for-byte what it was
    assert raw_state(manager.storage) == before
    assert manager.storage.debug_repr() == before_repr


@pytest.mark.parametrize(
    "configuration",
    [
        pytest.param(["t_x"], id="not-a-mapping"),
        pytest.param({"t_x": ["a"]}, id="directives-not-a-mapping"),
        pytest.param({1: {"after": ["a"], "run": DEV}}, id="task-name-not-a-string"),
        pytest.param({"": {"after": ["a"], "run": DEV}}, id="task-name-empty"),
    ],
)
def test_malformed_configuration_is_rejected_and_nothing_stored(
    manager: TriggerManager, configuration: Any
) -> None:
    # Given a populated session
    populate(manager)
    before = raw_state(manager.storage)
    # When the configuration is not shaped like {task name: directives}
    with pytest.raises(ConfigurationError) as info:
        manager.update_configuration(configuration)
    # Then the error says what is wrong, naming the task where there is one
    if isinstance(configuration, dict):
        name = next(iter(configuration))
        assert repr(name) in str(info.value)
    # And nothing changed
    assert raw_state(manager.storage) == before


def test_cycle_error_names_the_ring(manager: TriggerManager) -> None:
    # Given tasks that each wait for the other's cascade
    configuration = {
        "t_a": {"after": ["t_c"], "run": DEV},
        "t_b": {"after": ["t_a"], "run": DEV},
        "t_c": {"after": ["t_b", "start"], "run": DEV},
    }
    # When they are configured
    with pytest.raises(ConfigurationError) as info:
        manager.update_configuration(configuration)
    # Then the message shows the whole ring so the user can break it
    message = str(info.value)
    assert "cycle" in message
    for name in ("t_a", "t_b", "t_c"):
        assert name in message
    assert manager.storage.tasks == {}


def test_a_chain_without_a_cycle_is_accepted(manager: TriggerManager) -> None:
    # Given a diamond of cascades (shared ancestors, no cycle)
    manager.update_configuration(
        {
            "t_a": {"after": ["start"], "run": DEV},
            "t_b": {"after": ["t_a"], "run": DEV},
            "t_c": {"after": ["t_a"], "run": DEV},
            "t_d": {"after": ["t_b", "t_c"], "run": DEV},
        }
    )
    # When the start trigger fires
    manager.fire("start")
    settle()
    # Then every task ran once
    assert statuses(manager.storage) == {
        "t_a#0": "finished",
        "t_b#0": "finished",
        "t_c#0": "finished",
        "t_d#0": "finished",
    }
