"""Groups inside ``after`` and ``unless`` (SPEC §14): ``{"anyOf": [names]}``
and ``{"atLeast": k, "of": [names]}``. The requirement model on its own,
validation, the rules on a session in memory, and a real Redis session."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import pytest

from tests.contract_backends import DEV, PASS, new_uid, settle, statuses
from tests.property_model import model_statuses
from triggers import engine
from triggers.conditions import Group, Rule, parse_rule, rule_of
from triggers.config import check_configuration, validate_configuration
from triggers.exceptions import ConfigurationError
from triggers.graph import build_graph, find_cascade_cycle, to_dot, to_json, to_mermaid
from triggers.inspection import (
    describe_instance,
    describe_waiting,
    inspect_session,
    render_session_table,
)
from triggers.inspector.svg import to_svg
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.types import TaskConfig

SHIP = {
    "t_ship": {
        "after": ["orderPlaced", {"anyOf": ["cardPaid", "invoicePaid"]}],
        "run": DEV,
    }
}


# -- the requirement model ------------------------------------------------------


def test_a_rule_is_met_when_every_name_and_every_group_is() -> None:
    rule = rule_of(["a", {"anyOf": ["x", "y"]}, {"atLeast": 2, "of": ["p", "q", "r"]}])
    assert rule.names == {"a", "x", "y", "p", "q", "r"}
    assert not rule.met({"a", "x", "p"})
    assert rule.met({"a", "y", "p", "r"})
    assert rule.progress({"a", "x", "p"}) == (2, 3)
    assert rule.pending({"a", "x", "p"}) == ["2 of p, q, r"]


def test_members_of_a_satisfied_group_are_no_longer_waited_on() -> None:
    rule = rule_of(["a", {"anyOf": ["x", "y"]}, {"atLeast": 2, "of": ["p", "q", "r"]}])
    assert rule.missing(set()) == {"a", "x", "y", "p", "q", "r"}
    assert rule.missing({"x", "q"}) == {"a", "p", "r"}
    assert rule.missing({"x", "q", "r", "a"}) == set()


def test_the_json_form_is_sorted_and_round_trips() -> None:
    value = [{"atLeast": 2, "of": ["r", "p", "q"]}, "b", {"anyOf": ["y", "x"]}, "a"]
    rule = parse_rule("t", "after", value)
    assert rule.to_json() == [
        "a",
        "b",
        {"anyOf": ["x", "y"]},
        {"atLeast": 2, "of": ["p", "q", "r"]},
    ]
    assert rule_of(rule.to_json()) == rule
    assert rule.describe() == ["a", "b", "any of x, y", "2 of p, q, r"]


def test_plain_lists_keep_their_meaning() -> None:
    rule = parse_rule("t", "after", ["a", "b"])
    assert rule == Rule(frozenset({"a", "b"}))
    assert rule.met({"a", "b"}) and not rule.met({"a"})
    assert rule.to_json() == ["a", "b"]


# -- validation -----------------------------------------------------------------

BAD_GROUPS: list[tuple[Any, str]] = [
    ({"anyOf": []}, "anyOf is empty"),
    ({"anyOf": "x"}, "write ['x']"),
    ({"anyOf": ["x", "x"]}, "names 'x' twice"),
    ({"anyOf": ["x", 3]}, "must be a string"),
    ({"anyof": ["x"]}, "write 'anyOf'"),
    ({"atLeast": 3, "of": ["x", "y"]}, "use a number from 1 to 2"),
    ({"atLeast": 0, "of": ["x", "y"]}, "use a number from 1 to 2"),
    ({"atLeast": True, "of": ["x", "y"]}, "whole number"),
    ({"atLeast": "2", "of": ["x", "y"]}, "whole number"),
    ({"atLeast": 1}, 'atLeast needs "of"'),
    ({"of": ["x"]}, '"of" needs "atLeast"'),
    ({"anyOf": ["x"], "atLeast": 1}, "got keys"),
    ({"anyOf": [{"anyOf": ["x"]}]}, "must be a string"),
]


@pytest.mark.parametrize("directive", ["after", "unless"])
@pytest.mark.parametrize(("group", "message"), BAD_GROUPS)
def test_a_malformed_group_is_a_configuration_error(
    directive: str, group: Any, message: str
) -> None:
    directives: dict[str, Any] = {"after": ["a"], "run": DEV, directive: ["a", group]}
    with pytest.raises(ConfigurationError) as info:
        validate_configuration({"t_x": directives})
    assert info.value.task == "t_x" and info.value.directive == directive
    assert message in str(info.value)


def test_other_bad_shapes_name_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"put the group in one: \[\{'anyOf'"):
        validate_configuration({"t": {"after": {"anyOf": ["a", "b"]}, "run": DEV}})
    with pytest.raises(ConfigurationError, match="both required on its own and a member"):
        validate_configuration({"t": {"after": ["a", {"anyOf": ["a", "b"]}], "run": DEV}})


def test_every_task_s_problem_is_collected() -> None:
    configs, problems = check_configuration(
        {
            "t_a": {"after": [{"anyOf": []}], "run": DEV},
            "t_b": {"after": ["x"], "run": DEV, "unless": [{"atLeast": 5, "of": ["y"]}]},
            "t_ok": {"after": [{"anyOf": ["x", "y"]}], "run": DEV},
        }
    )
    assert list(configs) == ["t_ok"]
    assert [(p.error.task, p.error.directive) for p in problems] == [
        ("t_a", "after"),
        ("t_b", "unless"),
    ]


def test_a_ring_through_a_group_blocks_only_when_no_member_outside_it_can_fire() -> None:
    # t_a waits on any of t_b or an outside trigger, t_b on t_a: t_a can run
    free = {
        "t_a": {"after": [{"anyOf": ["t_b", "outside"]}], "run": DEV},
        "t_b": {"after": ["t_a"], "run": DEV},
    }
    assert find_cascade_cycle(validate_configuration(free)) is None
    # With atLeast 2 of the same two, t_a needs t_b's cascade: never runs
    stuck = {
        "t_a": {"after": [{"atLeast": 2, "of": ["t_b", "outside"]}], "run": DEV},
        "t_b": {"after": ["t_a"], "run": DEV},
    }
    with pytest.raises(ConfigurationError, match=r"cycle \(t_a -> t_b -> t_a\)"):
        validate_configuration(stuck)


# -- the rules, in memory -------------------------------------------------------


def memory(configuration: dict[str, Any]) -> engine.MemorySession:
    return engine.MemorySession(validate_configuration(configuration))


def fire(s: engine.MemorySession, trigger: str, **kwargs: Any) -> engine.Effects:
    return s.apply(engine.apply_trigger(s, trigger, kwargs))


def test_any_one_member_completes_an_anyof_group() -> None:
    # Given "ship after the order and any payment"
    s = memory(SHIP)
    # When the order is placed and the invoice is paid
    fire(s, "orderPlaced", order=7)
    fx = fire(s, "invoicePaid", amount=10)
    # Then the task is ready, holding the triggers that actually fired
    assert [i.name for i in fx.ready] == ["t_ship#0"]
    assert s.instances["t_ship#0"].kwargs == {
        "orderPlaced": {"order": 7},
        "invoicePaid": {"amount": 10},
    }


def test_a_second_member_after_the_group_is_met_does_not_apply() -> None:
    # Given a task after c and any of x, y, with x already received
    s = memory({"t": {"after": ["c", {"anyOf": ["x", "y"]}], "run": DEV}})
    fire(s, "x", n=1)
    # When y fires too (the group was met) and then c
    fx = fire(s, "y", n=2)
    fire(s, "c")
    # Then y applied to nothing: the instance no longer waited on it
    assert fx.changed == [] and fx.created == []
    assert set(s.instances["t#0"].kwargs) == {"x", "c"}
    assert s.latest_kwargs["y"] == {"n": 2}


def test_at_least_k_of_n() -> None:
    s = memory({"t": {"after": [{"atLeast": 2, "of": ["r1", "r2", "r3"]}], "run": DEV}})
    assert fire(s, "r2").ready == []
    inst = s.instances["t#0"]
    assert describe_waiting(inst) == "waiting on 1 of 1: 2 of r1, r2, r3"
    assert [i.name for i in fire(s, "r3").ready] == ["t#0"]


def test_an_anyof_unless_abandons_on_any_member() -> None:
    s = memory(
        {"t": {"after": ["a", "b"], "unless": [{"anyOf": ["cancelled", "refunded"]}], "run": DEV}}
    )
    fire(s, "a")
    fx = fire(s, "refunded", why="late")
    assert [i.name for i in fx.abandoned] == ["t#0"]
    assert describe_instance(s.instances["t#0"]) == "unless any of cancelled, refunded fired"


def test_andevery_instances_are_seeded_with_every_member_that_fired() -> None:
    s = memory({"t": {"after": [{"anyOf": ["x", "y"]}], "andEvery": "tick", "run": DEV}})
    fire(s, "tick")  # t#0 waits on any of x, y
    fire(s, "y", v=1)
    fx = fire(s, "tick")  # t#0 is ready already, so a new instance
    assert [i.name for i in fx.created] == ["t#1"]
    assert s.instances["t#1"].kwargs == {"y": {"v": 1}, "tick": {}}


# -- a real session (Redis) ------------------------------------------------------


@pytest.mark.usefixtures("threaded")
def test_ship_after_order_and_any_payment_on_redis(manager: TriggerManager) -> None:
    # Given the shipping workflow stored in Redis
    manager.update_configuration(SHIP)
    stored = manager.storage.tasks["t_ship"]
    assert stored == TaskConfig.from_directives("t_ship", SHIP["t_ship"])
    assert stored.to_directives()["after"] == [
        "orderPlaced",
        {"anyOf": ["cardPaid", "invoicePaid"]},
    ]
    # When the card is paid: still waiting on the order only
    manager.fire("cardPaid", {"amount": 120})
    assert manager.waiting_on() == {"t_ship#0": ["orderPlaced"]}
    report = inspect_session(manager)
    assert report["instances"][0]["detail"] == "waiting on 1 of 2: orderPlaced"
    # and then the order, then a second payment
    manager.fire("orderPlaced", {"order": 7})
    manager.fire("invoicePaid", {"amount": 5})
    settle()
    # Then it ran once, with the triggers that applied
    assert statuses(manager.storage) == {"t_ship#0": "finished"}
    assert set(manager.storage["t_ship#0"].kwargs) == {"cardPaid", "orderPlaced"}


def test_graphs_draw_a_group_as_its_own_node() -> None:
    configs = validate_configuration(
        {
            **SHIP,
            "t_notify": {
                "after": ["t_ship"],
                "unless": [{"atLeast": 2, "of": ["a", "b", "c"]}],
                "run": DEV,
            },
        }
    )
    graph = build_graph(configs, instances=[], fired=["cardPaid"])
    groups = {n.label: n for n in graph.nodes.values() if n.kind == "group"}
    assert set(groups) == {"any of", "2 of 3"}
    assert groups["any of"].state == "fired"
    mermaid = to_mermaid(graph)
    assert '{{"any of"}}' in mermaid and '{{"2 of 3"}}' in mermaid
    assert "shape=hexagon" in to_dot(graph)
    edges = {(e["source"], e["target"]) for e in to_json(graph)["edges"]}
    any_of = groups["any of"].name
    assert {("cardPaid", any_of), ("invoicePaid", any_of), (any_of, "t_ship")} <= edges


def test_group_parts_are_data() -> None:
    assert Group(2, ("a", "b", "c"), "atLeast").to_json() == {"atLeast": 2, "of": ["a", "b", "c"]}
    assert Group(1, ("a",)).describe() == "any of a"


def test_triggers_inspect_lists_pending_timers(timer_cache: str) -> None:
    # Given a session with a delayed fire pending (in a due index of its own)
    manager = TriggerManager(CacheStorageBackend(new_uid(), cache=timer_cache))
    manager.update_configuration(SHIP)
    manager.fire("orderPlaced", {"order": 7}, delay=3600)
    # When it is inspected
    report = inspect_session(manager)
    # Then the report and its table show the timer
    [timer] = report["timers"]
    assert timer["trigger"] == "orderPlaced" and timer["kwargs"] == {"order": 7}
    assert f"timer: orderPlaced due {timer['due']} (delayed fire)" in render_session_table(report)


def test_andevery_cannot_also_be_a_group_member() -> None:
    with pytest.raises(ConfigurationError, match="drop it from the group") as info:
        validate_configuration(
            {"t": {"after": [{"anyOf": ["tick", "x"]}], "andEvery": "tick", "run": DEV}}
        )
    assert info.value.directive == "andEvery"


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("backend", ["cache", "database"])
@pytest.mark.parametrize(
    "configuration",
    [
        # Two groups sharing members: a completes the first, b the second
        {"after": ["c", {"anyOf": ["a", "b", "x"]}, {"anyOf": ["b", "x"]}], "run": DEV},
        # A member of an after group that is also an unless trigger
        {"after": ["c", "d", {"anyOf": ["a", "b"]}], "unless": ["b"], "run": DEV},
    ],
    ids=["overlapping-groups", "member-also-unless"],
)
def test_a_satisfied_group_still_lets_other_requirements_receive_its_members(
    backend: str, configuration: dict[str, Any]
) -> None:
    storage: BaseTriggerStorage = (
        DatabaseStorageBackend(new_uid(), database="postgres")
        if backend == "database"
        else CacheStorageBackend(new_uid())
    )
    manager = TriggerManager(storage)
    # Given the instance exists (so later fires read it from Redis as they
    # find it waiting), and a completes the first group
    manager.update_configuration({"t": configuration})
    manager.fire("c")
    manager.fire("a")
    # When b fires
    manager.fire("b")
    settle()
    # Then b reached the instance: the second group is met (ran), or the
    # unless is (abandoned), as the reference model says
    expected = "finished" if "unless" not in configuration else "abandoned"
    assert model_statuses({"t": configuration}, ["c", "a", "b"]) == {"t#0": expected}
    assert statuses(manager.storage) == {"t#0": expected}


def test_the_inspector_svg_draws_groups_and_conditions_as_valid_xml() -> None:
    configs = validate_configuration(
        {
            "t_ship": {
                "after": ["o", {"anyOf": ["a", "b"]}],
                "unless": [{"atLeast": 2, "of": ["x", "y", "z"]}],
                "if": {"a": 'kwargs.n > 1 && kwargs.s == "<&>"'},
                "run": DEV,
            }
        }
    )
    svg = to_svg(build_graph(configs, instances=[], fired=["a"]))
    root = ElementTree.fromstring(svg)  # well-formed, escapes and all
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if "node-group" in g.get("class", "")]
    assert len(groups) == 2
    texts = {t.text for t in root.iter(f"{ns}text")}
    assert 'if kwargs.n > 1 && kwargs.s == "<&>"' in texts and {"any of", "2 of 3"} <= texts


def test_graphs_draw_a_deadline_as_a_dotted_edge_to_the_trigger_it_fires() -> None:
    # Given a reminder task abandoned by its own deadline's trigger
    configs = validate_configuration(
        {
            "t_remind": {
                "after": ["signedUp", "profileDone"],
                "unless": ["remindTimeout"],
                "deadline": {"seconds": 172800, "fire": "remindTimeout"},
                "run": DEV,
            }
        }
    )
    graph = build_graph(configs)
    assert ("t_remind", "remindTimeout", "deadline") in graph.edges
    assert graph.edge_label("t_remind", "remindTimeout", "deadline") == "deadline 2d"
    assert "-.->|deadline 2d|" in to_mermaid(graph)
    assert 'style=dotted, label="deadline 2d"' in to_dot(graph)
    svg = to_svg(graph)
    ElementTree.fromstring(svg)
    assert "edge-deadline" in svg and ">deadline 2d<" in svg


@pytest.mark.usefixtures("threaded")
def test_withparams_of_a_member_that_did_not_fire_are_not_passed(manager: TriggerManager) -> None:
    # Given static params for the order and both payment kinds
    manager.update_configuration(
        {
            "t_ship": {
                **SHIP["t_ship"],
                "run": PASS,
                "withParams": {
                    "orderPlaced": {"carrier": "post"},
                    "cardPaid": {"fee": 1},
                    "invoicePaid": {"fee": 0},
                },
            }
        }
    )
    # When the order is placed and paid by invoice
    manager.fire("orderPlaced", {"order": 7})
    manager.fire("invoicePaid", {"amount": 10})
    settle()
    # Then the task saw the triggers that fired, with their params, only
    result = manager.storage["t_ship#0"].metadata["result"]["kwargs"]
    assert result == {
        "orderPlaced": {"order": 7, "carrier": "post"},
        "invoicePaid": {"amount": 10, "fee": 0},
    }
