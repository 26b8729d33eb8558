"""The ``if`` directive (SPEC §14): CEL conditions on a trigger's kwargs.
Compiling and validating them, evaluating them (errors are defined
behaviour), the rules in memory, and a real Redis session."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import deque
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from hypothesis import given, settings

from tests.contract_backends import DEV, new_uid, settle, statuses
from tests.property_model import kwarg_fires, model_statuses, split, workflows
from triggers import conditions, engine
from triggers.checks import check_workflows
from triggers.config import check_configuration, validate_configuration
from triggers.exceptions import ConfigurationError
from triggers.graph import build_graph, to_dot, to_mermaid
from triggers.inspection import describe_waiting, inspect_session
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.types import TaskConfig

BIG_PAYMENT = {
    "t_review": {
        "after": ["paymentReceived"],
        "andEvery": "paymentReceived",
        "if": {"paymentReceived": "kwargs.amount > 1000"},
        "run": DEV,
    }
}


# -- compiling and validating -----------------------------------------------------


def test_a_condition_is_stored_as_the_expression_written() -> None:
    config = validate_configuration(BIG_PAYMENT)["t_review"]
    assert config.conditions == {"paymentReceived": "kwargs.amount > 1000"}
    assert config.to_directives()["if"] == {"paymentReceived": "kwargs.amount > 1000"}
    assert TaskConfig.from_directives("t_review", config.to_directives()) == config


def test_expressions_are_compiled_once_per_string() -> None:
    conditions.program.cache_clear()
    for _ in range(3):
        validate_configuration(BIG_PAYMENT)
        conditions.evaluate("kwargs.amount > 1000", {"amount": 5})
    info = conditions.program.cache_info()
    assert info.misses == 1 and info.hits >= 5


BAD_CONDITIONS: list[tuple[Any, str]] = [
    ({"paymentReceived": "kwargs.amount >"}, "is not a valid CEL expression"),
    ({"paymentReceived": ""}, "a non-empty string"),
    ({"paymentReceived": 1000}, "a non-empty string"),
    ({"paymentReceived": "amount > 1000"}, "unknown variable(s) amount"),
    ({"refundIssued": "kwargs.amount > 0"}, "which the task does not wait on"),
    ("kwargs.amount > 1000", "must map trigger names to CEL expressions"),
    ({"paymentReceived": "x" * 2001}, "the limit is 2000"),
]


@pytest.mark.parametrize(("value", "message"), BAD_CONDITIONS)
def test_a_bad_condition_names_the_task_trigger_and_fix(value: Any, message: str) -> None:
    directives = {"after": ["paymentReceived"], "run": DEV, "if": value}
    with pytest.raises(ConfigurationError) as info:
        validate_configuration({"t_review": directives})
    assert info.value.task == "t_review" and info.value.directive == "if"
    assert message in str(info.value)


def test_comprehension_variables_are_not_unknown() -> None:
    config = validate_configuration(
        {"t": {"after": ["c"], "run": DEV, "if": {"c": "kwargs.items.exists(i, i.qty > 10)"}}}
    )["t"]
    assert conditions.evaluate(config.conditions["c"], {"items": [{"qty": 11}]}) == (True, None)


def test_conditions_may_name_unless_and_andevery_triggers() -> None:
    configs, problems = check_configuration(
        {
            "t": {
                "after": ["a"],
                "andEvery": "tick",
                "unless": ["stop"],
                "if": {"tick": "kwargs.n % 2 == 0", "stop": "kwargs.hard", "a": "true"},
                "run": DEV,
            }
        }
    )
    assert problems == [] and set(configs["t"].conditions) == {"a", "tick", "stop"}


# -- evaluating ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "kwargs", "expected"),
    [
        ("kwargs.amount > 1000", {"amount": 1500}, (True, None)),
        ("kwargs.amount > 1000", {"amount": 1000}, (False, None)),
        ("kwargs.amount > 1.5", {"amount": 2}, (True, None)),  # int against double
        (
            'kwargs.currency == "EUR" && kwargs.amount >= 100',
            {"currency": "EUR", "amount": 100},
            (True, None),
        ),
        ("has(kwargs.coupon)", {}, (False, None)),
        ('"vip" in kwargs.tags', {"tags": ["vip"]}, (True, None)),
    ],
)
def test_evaluating(expression: str, kwargs: dict[str, Any], expected: Any) -> None:
    assert conditions.evaluate(expression, kwargs) == expected


@pytest.mark.parametrize(
    ("expression", "kwargs", "reason"),
    [
        ("kwargs.amount > 1000", {}, "no key 'amount' in the kwargs"),
        ("kwargs.amount > 1000", {"amount": "lots"}, "TypeError"),
        ("kwargs.amount / kwargs.n > 1", {"amount": 1, "n": 0}, "ZeroDivisionError"),
        ("kwargs.amount", {"amount": 1}, "not true or false"),
    ],
)
def test_an_evaluation_error_counts_as_false_with_a_reason(
    expression: str, kwargs: dict[str, Any], reason: str
) -> None:
    passed, why = conditions.evaluate(expression, kwargs)
    assert passed is False and why is not None and reason in why


# -- manage.py check and triggers_validate ----------------------------------------


def test_check_and_triggers_validate_report_bad_groups_and_conditions(tmp_path: Any) -> None:
    # Given workflows with a malformed group and a condition that does not compile
    workflows = {
        "group": {"t_ship": {"after": [{"atLeast": 3, "of": ["a", "b"]}], "run": DEV}},
        "cond": {"t_big": {"after": ["paid"], "run": DEV, "if": {"paid": "kwargs.amount >"}}},
    }
    path = tmp_path / "cond.json"
    path.write_text(json.dumps(workflows["cond"]))
    with override_settings(TRIGGERS={"WORKFLOWS": workflows}):
        # When Django's checks run
        found = {m.obj: m for m in check_workflows()}
    # Then each names the workflow, task, directive and the fix
    group = found["TRIGGERS['WORKFLOWS']['group']"]
    assert group.id == "triggers.E006"
    assert group.msg.startswith("workflow 'group', task 't_ship', directive 'after': atLeast 3")
    assert "use a number from 1 to 2" in group.msg and "anyOf" in group.hint
    cond = found["TRIGGERS['WORKFLOWS']['cond']"]
    assert cond.id == "triggers.E006" and "directive 'if'" in cond.msg
    assert "the condition on 'paid' is not a valid CEL expression" in cond.msg
    # And triggers_validate says the same of a file, exiting 1
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("triggers_validate", str(path), stdout=out)
    assert caught.value.returncode == 1
    assert "[triggers.E006]" in out.getvalue() and "not a valid CEL expression" in out.getvalue()


# -- the rules, in memory ----------------------------------------------------------


def memory(configuration: dict[str, Any]) -> engine.MemorySession:
    return engine.MemorySession(validate_configuration(configuration))


def fire(s: engine.MemorySession, trigger: str, **kwargs: Any) -> engine.Effects:
    return s.apply(engine.apply_trigger(s, trigger, kwargs))


def test_a_fire_whose_condition_is_false_applies_to_no_instance_of_the_task() -> None:
    # Given reviews of payments over 1000, one per payment
    s = memory(BIG_PAYMENT)
    # When a small payment arrives: nothing is created, but it is recorded
    fx = fire(s, "paymentReceived", amount=80)
    assert fx.created == [] and fx.first_of == [] and s.instances == {}
    assert s.latest_kwargs["paymentReceived"] == {"amount": 80}
    # When large ones arrive: one review each
    assert [i.name for i in fire(s, "paymentReceived", amount=4200).ready] == ["t_review#0"]
    assert [i.name for i in fire(s, "paymentReceived", amount=1001).ready] == ["t_review#1"]
    assert fire(s, "paymentReceived", amount=5).created == []


def test_a_condition_belongs_to_its_task_only() -> None:
    s = memory({**BIG_PAYMENT, "t_ledger": {"after": ["paymentReceived"], "run": DEV}})
    fx = fire(s, "paymentReceived", amount=80)
    assert [i.name for i in fx.ready] == ["t_ledger#0"]


def test_a_new_instance_is_seeded_only_with_kwargs_that_pass() -> None:
    # Given a task after a and b, counting a only with n > 1
    s = memory(
        {"t": {"after": ["a", "b"], "andEvery": "b", "if": {"a": "kwargs.n > 1"}, "run": DEV}}
    )
    fire(s, "a", n=5)
    fire(s, "b")  # t#0: a (seeded) and b: ready
    fire(s, "a", n=0)  # does not count: latest a is now n=0
    # When b fires again, the new instance does not start with a
    fx = fire(s, "b")
    assert [i.name for i in fx.created] == ["t#1"] and fx.ready == []
    assert set(s.instances["t#1"].kwargs) == {"b"}


def test_a_condition_on_unless_abandons_only_on_matching_fires() -> None:
    s = memory(
        {
            "t": {
                "after": ["a", "b"],
                "unless": ["cancel"],
                "if": {"cancel": "kwargs.hard"},
                "run": DEV,
            }
        }
    )
    fire(s, "a")
    fire(s, "cancel", hard=False)
    assert s.instances["t#0"].status == "unstarted"
    assert [i.name for i in fire(s, "cancel", hard=True).abandoned] == ["t#0"]


def test_an_evaluation_error_is_reported_in_the_effects() -> None:
    s = memory(BIG_PAYMENT)
    fx = fire(s, "paymentReceived", total=99)
    assert fx.created == []
    assert fx.condition_errors == [("t_review", "paymentReceived", "no key 'amount' in the kwargs")]


# -- a real session (Redis, PostgreSQL) --------------------------------------------------------


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("backend", ["cache", "database"])
def test_payment_over_a_threshold(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = TriggerManager(
        DatabaseStorageBackend(new_uid(), database="postgres")
        if backend == "database"
        else CacheStorageBackend(new_uid())
    )
    # Given the review workflow stored in Redis, with another condition
    # that cannot be evaluated on the fires below
    manager.update_configuration(
        {
            **BIG_PAYMENT,
            "t_eur": {
                "after": ["paymentReceived"],
                "if": {"paymentReceived": 'kwargs.currency == "EUR"'},
                "run": DEV,
            },
        }
    )
    assert manager.storage.tasks["t_review"].conditions == BIG_PAYMENT["t_review"]["if"]
    # When a small and a large payment arrive
    with caplog.at_level(logging.WARNING, logger="triggers.manager"):
        manager.fire("paymentReceived", {"amount": 80})
        manager.fire("paymentReceived", {"amount": 4200})
    settle()
    # Then only the large one was reviewed, and each failed evaluation was
    # logged once, naming session, task, trigger and reason
    assert statuses(manager.storage) == {"t_review#0": "finished"}
    assert manager.storage["t_review#0"].kwargs == {"paymentReceived": {"amount": 4200}}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    uid = manager.storage.uid
    assert all(
        f"session {uid!r}" in w
        and "task 't_eur'" in w
        and "trigger 'paymentReceived'" in w
        and "no key 'currency'" in w
        for w in warnings
    )


def test_inspection_and_graphs_show_conditions(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_ship": {"after": ["order", "paid"], "if": {"paid": "kwargs.ok"}, "run": DEV}}
    )
    manager.fire("order")
    assert describe_waiting(manager.storage["t_ship#0"]) == "waiting on 1 of 2: paid [if kwargs.ok]"
    assert inspect_session(manager)["tasks"]["t_ship"]["if"] == {"paid": "kwargs.ok"}
    graph = build_graph(manager.storage.tasks)
    assert graph.conditions == {("paid", "t_ship"): "kwargs.ok"}
    assert '-->|"if kwargs.ok"|' in to_mermaid(graph)
    assert 'label="if kwargs.ok"' in to_dot(graph)


def test_one_compiled_program_is_safe_to_share_between_threads() -> None:
    # Compiled programs are cached per process and shared by every thread
    # that fires; each evaluation must see only its own kwargs.
    wrong: list[tuple[int, int]] = []

    def work(k: int) -> None:
        for i in range(2000):
            kwargs = {"n": i % 10, "s": "x" if k % 2 else "y"}
            expected = (i % 10 > 5 and k % 2 == 1, None)
            if conditions.evaluate('kwargs.n > 5 && kwargs.s == "x"', kwargs) != expected:
                wrong.append((k, i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


# -- the rules against the reference model ---------------------------------------------


def run_rules(configuration: dict[str, Any], fires: list[Any]) -> dict[str, str]:
    """The rules in memory, driven as the reference model runs: ready
    instances run first in, first out, each finish cascading."""
    s = memory(configuration)
    queue: deque[Any] = deque()
    for trigger, kwargs in map(split, fires):
        queue.extend(s.apply(engine.apply_trigger(s, trigger, kwargs)).ready)
        while queue:
            inst = queue.popleft()
            engine.claim(inst, True, 0, "tok", 1000)
            queue.extend(s.apply(engine.finish(s, inst, {}, {})).ready)
    return {n: i.status for n, i in s.instances.items()}


@settings(max_examples=300, deadline=None)
@given(configuration=workflows(with_conditions=True), fires=kwarg_fires)
def test_the_rules_and_the_reference_model_agree_on_conditions_and_groups(
    configuration: dict[str, Any], fires: list[Any]
) -> None:
    assert run_rules(configuration, fires) == model_statuses(configuration, fires)
