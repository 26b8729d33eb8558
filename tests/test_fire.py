"""manager.fire (SPEC §3): instance creation and naming, kwargs keyed by
trigger, seeding, andEvery, unless, withParams, and order independence."""

from __future__ import annotations

import itertools

import pytest

from tests.contract_backends import (
    DEV,
    PASS,
    new_uid,
    settle,
    statuses,
)
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance

pytestmark = pytest.mark.usefixtures("threaded")


def test_fire_returns_the_instances_it_scheduled_named_task_hash_n(
    manager: TriggerManager,
) -> None:
    # Given a one-shot task and a repeating one
    manager.update_configuration(
        {
            "t_once": {"after": ["go"], "run": DEV},
            "t_each": {"after": ["go"], "andEvery": "tick", "run": DEV},
        }
    )
    # When the triggers fire
    first = manager.fire("go")
    ticks = [manager.fire("tick") for _ in range(3)]
    settle()
    # Then instances are named <task>#<n>, n counting from 0 per task
    # (`go` creates t_each#0, which then waits for its first tick)
    assert [i.name for i in first] == ["t_once#0"]
    assert all(isinstance(i, TaskInstance) for i in first)
    assert [[i.name for i in batch] for batch in ticks] == [
        ["t_each#0"],
        ["t_each#1"],
        ["t_each#2"],
    ]
    assert [i.name for i in manager.storage] == ["t_each#0", "t_each#1", "t_each#2", "t_once#0"]
    assert set(statuses(manager.storage).values()) == {"finished"}


def test_instance_kwargs_are_keyed_by_trigger(manager: TriggerManager) -> None:
    # Given a task waiting for two triggers
    manager.update_configuration(
        {"t_import": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PASS}}
    )
    # When both fire, one with kwargs and one without
    manager.fire("firstPageReceived", {"responses": {"q1": "yes"}})
    manager.fire("questionnaireComplete")
    settle()
    # Then the task received each trigger's kwargs under the trigger's name
    expected = {"firstPageReceived": {"responses": {"q1": "yes"}}, "questionnaireComplete": {}}
    inst = manager.storage["t_import#0"]
    assert inst.kwargs == expected
    assert inst.metadata["kwargs"] == expected
    assert inst.metadata["result"] == {"kwargs": expected}


def test_new_instances_are_seeded_with_the_latest_kwargs(manager: TriggerManager) -> None:
    # Given trigger `a` fired twice before any task mentioned it
    manager.fire("a", {"v": 1})
    manager.fire("a", {"v": 2})
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": PASS}})
    # When the other trigger the task waits for fires
    scheduled = manager.fire("b", {"w": 3})
    settle()
    # Then #0 was created holding the latest kwargs of `a`, and ran
    assert [i.name for i in scheduled] == ["t_x#0"]
    assert manager.storage["t_x#0"].kwargs == {"a": {"v": 2}, "b": {"w": 3}}
    assert manager.storage.latest_kwargs == {
        "a": {"v": 2},
        "b": {"w": 3},
        "t_x": {"kwargs": {"a": {"v": 2}, "b": {"w": 3}}},
    }


def test_and_every_creates_an_instance_per_firing(manager: TriggerManager) -> None:
    # Given a task that runs for every page once the session started
    manager.update_configuration({"t_page": {"after": ["start"], "andEvery": "page", "run": PASS}})
    # When two pages arrive before the start
    manager.fire("page", {"n": 1})
    manager.fire("page", {"n": 2})
    settle()
    # Then each page has its own instance, waiting for `start`
    assert statuses(manager.storage) == {"t_page#0": "unstarted", "t_page#1": "unstarted"}
    # When the session starts, both run; a later page runs at once, seeded with `start`
    assert sorted(i.name for i in manager.fire("start", {"s": 1})) == ["t_page#0", "t_page#1"]
    assert [i.name for i in manager.fire("page", {"n": 3})] == ["t_page#2"]
    settle()
    storage = manager.storage
    assert [storage[f"t_page#{n}"].kwargs["page"] for n in range(3)] == [
        {"n": 1},
        {"n": 2},
        {"n": 3},
    ]
    assert storage["t_page#2"].kwargs == {"start": {"s": 1}, "page": {"n": 3}}
    assert set(statuses(storage).values()) == {"finished"}


def test_and_every_trigger_fills_a_waiting_instance_before_creating_one(
    manager: TriggerManager,
) -> None:
    # Given an instance created by `start` that has not seen a page yet
    manager.update_configuration({"t_page": {"after": ["start"], "andEvery": "page", "run": DEV}})
    manager.fire("start")
    assert statuses(manager.storage) == {"t_page#0": "unstarted"}
    # When a page arrives, it goes to that instance rather than a new one
    assert [i.name for i in manager.fire("page")] == ["t_page#0"]
    settle()
    assert statuses(manager.storage) == {"t_page#0": "finished"}


def test_firing_the_same_trigger_twice_does_not_create_a_second_one_shot_instance(
    manager: TriggerManager,
) -> None:
    # Given a one-shot task waiting for `a` and `b`
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": PASS}})
    # When `a` fires twice before `b`
    manager.fire("a", {"v": 1})
    manager.fire("a", {"v": 2})
    # Then the waiting instance kept what it received first
    assert [i.name for i in manager.storage] == ["t_x#0"]
    assert manager.storage["t_x#0"].kwargs == {"a": {"v": 1}}
    assert manager.storage.latest_kwargs["a"] == {"v": 2}
    # When the task has run and its triggers fire again
    manager.fire("b")
    settle()
    assert manager.fire("a", {"v": 3}) == []
    assert manager.fire("b") == []
    settle()
    # Then there is still exactly one instance
    assert statuses(manager.storage) == {"t_x#0": "finished"}


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["a", "x", "y"])), ids=lambda o: "-".join(o)
)
def test_unless_abandons_the_instance_in_any_order(
    manager: TriggerManager, order: tuple[str, ...]
) -> None:
    # Given a task that waits for `a` and `b` unless both `x` and `y` fire
    manager.update_configuration({"t_x": {"after": ["a", "b"], "unless": ["x", "y"], "run": DEV}})
    # When `a`, `x` and `y` fire in any order
    for trigger in order:
        manager.fire(trigger, {"from": trigger})
    # Then the one instance is abandoned, and stays so when `b` arrives
    assert statuses(manager.storage) == {"t_x#0": "abandoned"}
    assert manager.fire("b") == []
    settle()
    inst = manager.storage["t_x#0"]
    assert inst.status == "abandoned"
    assert inst.abandon_state == {"x": {"from": "x"}, "y": {"from": "y"}}
    assert "abandoned" in inst.metadata["timestamps"]


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["a", "b", "x", "y"])), ids=lambda o: "-".join(o)
)
def test_unless_only_abandons_what_has_not_started(
    manager: TriggerManager, order: tuple[str, ...]
) -> None:
    # Given a task that waits for `a` and `b` unless both `x` and `y` fire
    manager.update_configuration({"t_x": {"after": ["a", "b"], "unless": ["x", "y"], "run": DEV}})
    # When all four fire in some order
    for trigger in order:
        manager.fire(trigger)
    settle()
    # Then it ran if its `after` completed first, else it was abandoned
    ran = max(order.index("a"), order.index("b")) < max(order.index("x"), order.index("y"))
    assert statuses(manager.storage) == {"t_x#0": "finished" if ran else "abandoned"}


def test_unless_needs_all_of_its_triggers(manager: TriggerManager) -> None:
    # Given a task with two `unless` triggers
    manager.update_configuration({"t_x": {"after": ["a"], "unless": ["x", "y"], "run": DEV}})
    # When only one of them fires before the `after` trigger
    manager.fire("x")
    manager.fire("a")
    settle()
    # Then the task still runs
    assert statuses(manager.storage) == {"t_x#0": "finished"}


def test_with_params_is_merged_under_fired_kwargs(manager: TriggerManager) -> None:
    # Given static params for a fired trigger (nested) and for one that never fires
    manager.update_configuration(
        {
            "t_x": {
                "after": ["a"],
                "run": PASS,
                "withParams": {
                    "a": {"k": 1, "static": "s", "nested": {"x": 1, "y": 2}},
                    "extra": {"only": "static"},
                },
            }
        }
    )
    # When the trigger fires with some of the same keys
    manager.fire("a", {"k": 2, "nested": {"y": 3}, "fired": True})
    settle()
    # Then the task sees a recursive merge in which fired values win
    expected = {
        "a": {"k": 2, "static": "s", "nested": {"x": 1, "y": 3}, "fired": True},
        "extra": {"only": "static"},
    }
    inst = manager.storage["t_x#0"]
    assert inst.metadata["result"] == {"kwargs": expected}
    assert inst.metadata["kwargs"] == expected
    # And the instance itself keeps only what was fired
    assert inst.kwargs == {"a": {"k": 2, "nested": {"y": 3}, "fired": True}}


def test_firing_into_an_unconfigured_session_records_the_trigger(
    manager: TriggerManager,
) -> None:
    # Given a session with no configuration
    # When a trigger fires
    assert manager.fire("early", {"v": [1, 2]}) == []
    # Then it is recorded as the session's latest kwargs for that trigger
    assert manager.storage.latest_kwargs == {"early": {"v": [1, 2]}}
    assert manager.storage.metadata["latest_kwargs"] == {"early": {"v": [1, 2]}}
    assert manager.storage.instances == {}


def test_cascade_fires_the_task_name_with_its_result(manager: TriggerManager) -> None:
    # Given two tasks chained by the first one's cascade
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": PASS},
            "t_second": {"after": ["t_first"], "run": PASS},
        }
    )
    # When the first runs
    manager.fire("start", {"n": 1})
    settle()
    # Then the second receives the first's returned mapping under its name
    assert manager.storage["t_second#0"].kwargs == {"t_first": {"kwargs": {"start": {"n": 1}}}}
    assert manager.storage.latest_kwargs["t_first"] == {"kwargs": {"start": {"n": 1}}}


def _run_small_workflow(order: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    manager = TriggerManager(CacheStorageBackend(new_uid("perm")))
    manager.update_configuration(
        {
            "t_1": {"after": ["a", "b"], "run": PASS},
            "t_2": {"after": ["t_1", "c"], "run": PASS},
            "t_3": {"after": ["a"], "andEvery": "d", "run": PASS},
            "t_4": {"after": ["t_2", "t_3"], "run": PASS},
        }
    )
    for trigger in order:
        manager.fire(trigger, {"trigger": trigger})
    settle()
    return {
        name: (inst.status, inst.metadata.get("result"))
        for name, inst in manager.storage.instances.items()
    }


def test_final_state_does_not_depend_on_the_order_of_fires() -> None:
    # Given a small workflow with joins, a cascade chain and an andEvery task
    orders = list(itertools.permutations(["a", "b", "c", "d"]))
    # When its four triggers fire in every possible order (tasks running meanwhile)
    outcomes = {order: _run_small_workflow(order) for order in orders}
    # Then every order ends with the same instances, statuses and results
    reference = outcomes[orders[0]]
    assert {name: status for name, (status, _) in reference.items()} == {
        "t_1#0": "finished",
        "t_2#0": "finished",
        "t_3#0": "finished",
        "t_4#0": "finished",
    }
    for order, outcome in outcomes.items():
        assert outcome == reference, f"order {order} differs"
