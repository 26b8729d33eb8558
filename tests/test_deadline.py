"""The ``deadline`` directive (SPEC §14): ``{"seconds": N, "fire": name}``.
A new instance of the task sets a timer; if the instance is still unstarted
when it is due, ``name`` fires with ``{"instance": <name>}``, otherwise the
timer is dropped. Checked when configured, by ``manage.py check`` and by
``triggers_validate``."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test.utils import override_settings

from tests.contract_backends import DEV, PASS, POSTGRES_ALIAS
from triggers.exceptions import ConfigurationError
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.due_index import index_for
from triggers.testing import run_due_timers

DAY = 24 * 3600
REVIEW = {
    "t_review": {
        "after": ["submitted", "reviewerAssigned"],
        "run": DEV,
        "deadline": {"seconds": 2 * DAY, "fire": "reviewOverdue"},
    },
    "t_escalate": {"after": ["reviewOverdue"], "run": PASS},
}


@pytest.fixture
def new_manager(request: pytest.FixtureRequest) -> Any:
    kind = getattr(request, "param", "redis")

    def build(config: dict[str, Any] = REVIEW) -> TriggerManager:
        uid = f"deadline-{uuid.uuid4().hex}"
        if kind == "database":
            from triggers.storages.database import DatabaseStorageBackend

            storage: Any = DatabaseStorageBackend(uid, database=POSTGRES_ALIAS)
        else:
            storage = CacheStorageBackend(uid, cache=request.getfixturevalue("timer_cache"))
        manager = TriggerManager(storage)
        manager.update_configuration(config)
        return manager

    return build


# -- checked when configured ------------------------------------------------------------

BAD = [
    ("a number", 3600, "must be a mapping"),
    ("no fire", {"seconds": 60}, "takes exactly the keys 'seconds' and 'fire'"),
    ("an extra key", {"seconds": 60, "fire": "late", "repeat": True}, "unknown key(s) 'repeat'"),
    ("zero seconds", {"seconds": 0, "fire": "late"}, "'seconds' must be a positive number"),
    ("text seconds", {"seconds": "60", "fire": "late"}, "'seconds' must be a positive number"),
    ("bool seconds", {"seconds": True, "fire": "late"}, "'seconds' must be a positive number"),
    ("empty fire", {"seconds": 60, "fire": ""}, "'fire' must name the trigger"),
    ("list fire", {"seconds": 60, "fire": ["late"]}, "'fire' must name the trigger"),
]


@pytest.mark.parametrize(("label", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_deadline_is_refused_naming_task_directive_and_fix(
    label: str, value: Any, message: str, new_manager: Any
) -> None:
    manager = new_manager({})
    with pytest.raises(ConfigurationError) as caught:
        manager.update_configuration({"t_review": {"after": ["a"], "run": DEV, "deadline": value}})
    text = str(caught.value)
    assert "'t_review'" in text and "'deadline'" in text and message in text
    assert manager.storage.tasks == {}


def test_manage_py_check_and_triggers_validate_report_a_bad_deadline(tmp_path: Any) -> None:
    path = tmp_path / "review.json"
    bad = {"t_review": {"after": ["a"], "run": PASS, "deadline": {"seconds": -1, "fire": "x"}}}
    path.write_text(json.dumps(bad))
    with override_settings(TRIGGERS={"WORKFLOWS": {"review": str(path)}}):
        with pytest.raises(SystemCheckError) as caught:
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert "triggers.E006" in str(caught.value)
    assert "task 't_review', directive 'deadline'" in str(caught.value)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("triggers_validate", str(path), stdout=out)
    assert "directive 'deadline'" in out.getvalue()


def test_a_good_deadline_is_kept_with_the_task(new_manager: Any) -> None:
    manager = new_manager()
    assert manager.storage.tasks["t_review"].to_directives()["deadline"] == {
        "seconds": 2 * DAY,
        "fire": "reviewOverdue",
    }


# -- what it does -----------------------------------------------------------------------


@pytest.mark.parametrize("new_manager", ["redis", "database"], indirect=True)
def test_an_instance_still_unstarted_when_due_fires_the_deadline(
    new_manager: Any, threaded: None
) -> None:
    # Given a paper submitted and no reviewer assigned
    manager = new_manager()
    manager.fire("submitted")
    # Then the new instance set its deadline
    (timer,) = manager.storage.timers
    assert (timer["trigger"], timer["instance"]) == ("reviewOverdue", "t_review#0")
    # When two days pass, the deadline fires with the instance's name
    assert run_due_timers(manager, timedelta(days=1)) == 0
    assert run_due_timers(manager, timedelta(days=2, seconds=1)) == 1
    escalated = manager.storage["t_escalate#0"]
    assert escalated.status == "finished"
    assert escalated.metadata["result"] == {"kwargs": {"reviewOverdue": {"instance": "t_review#0"}}}
    assert manager.storage["t_review#0"].status == "unstarted"
    assert manager.storage.timers == []
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("new_manager", ["redis", "database"], indirect=True)
def test_an_instance_that_started_in_time_drops_its_deadline(
    new_manager: Any, threaded: None
) -> None:
    manager = new_manager()
    manager.fire("submitted")
    manager.fire("reviewerAssigned")
    assert run_due_timers(manager, timedelta(days=3)) == 0
    assert "t_escalate#0" not in manager.storage.instances
    assert "reviewOverdue" not in manager.storage.latest_kwargs
    assert manager.storage.timers == []
    assert index_for(manager.storage).count() == 0


def test_every_new_instance_sets_its_own_deadline(new_manager: Any, threaded: None) -> None:
    # Given a task that makes an instance per order, each with an hour to be paid
    manager = new_manager(
        {
            "t_ship": {
                "after": ["paid"],
                "andEvery": "ordered",
                "run": DEV,
                "deadline": {"seconds": 3600, "fire": "paymentLate"},
            },
            "t_chase": {"after": ["paymentLate"], "andEvery": "paymentLate", "run": PASS},
        }
    )
    manager.fire("ordered", {"order": 1})
    manager.fire("ordered", {"order": 2})
    assert sorted(t["instance"] for t in manager.storage.timers) == ["t_ship#0", "t_ship#1"]
    # When an hour passes, each late order is chased once
    assert run_due_timers(manager, 3601) == 2
    chased = sorted(
        inst.kwargs["paymentLate"]["instance"]
        for name, inst in manager.storage.instances.items()
        if name.startswith("t_chase#")
    )
    assert chased == ["t_ship#0", "t_ship#1"]
