"""The ``if`` directive (SPEC §14): CEL conditions on a trigger's kwargs.
Compiling and validating them, evaluating them (errors are defined
behaviour), the rules in memory, and a real Redis session."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from tests.contract_backends import DEV
from triggers import conditions
from triggers.checks import check_workflows
from triggers.config import check_configuration, validate_configuration
from triggers.exceptions import ConfigurationError
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
