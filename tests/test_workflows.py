"""Workflows declared once in settings; views get a manager and start sessions
by name (triggers.workflows, triggers.shortcuts)."""

from __future__ import annotations

import json

import pytest

from tests.utils import wait_for
from triggers import get_trigger_manager, start_session
from triggers.exceptions import ConfigurationError
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance
from triggers.workflows import (
    UnknownWorkflowError,
    WorkflowFileError,
    find_problems,
    get_workflow,
    load_workflow,
)

PASS = "triggers.testing.PassThruTask"

QUESTIONNAIRE = {
    "t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PASS},
    "t_importResponses": {
        "after": ["t_importSubject", "pageReceived"],
        "andEvery": "pageReceived",
        "run": PASS,
    },
}


class CountingManager(TriggerManager):
    """A project's own manager, chosen in settings by dotted path."""


@pytest.fixture
def workflows(settings, tmp_path):
    """TRIGGERS with one inline workflow and one from a JSON file."""
    (tmp_path / "questionnaire.json").write_text(json.dumps(QUESTIONNAIRE))
    settings.TRIGGERS = {
        "CACHE": "default",
        "WORKFLOWS_DIR": str(tmp_path),
        "WORKFLOWS": {"inline": QUESTIONNAIRE, "questionnaire": "questionnaire.json"},
    }
    return tmp_path


def status_of(manager: TriggerManager, name: str) -> str | None:
    instances = manager.storage.instances
    return instances[name].status if name in instances else None


def test_a_view_starts_a_named_workflow_and_then_only_fires(workflows, celery_worker, unique_uid):
    # Given the questionnaire workflow declared in settings as a JSON file
    # When a view starts the session by name and later views only fire triggers
    start_session(unique_uid, workflow="questionnaire")
    manager = get_trigger_manager(unique_uid)
    manager.fire("pageReceived", {"page": 1})
    manager.fire("firstPageReceived", {"page": 1})
    manager.fire("questionnaireComplete")
    # Then the real worker runs the subject import and the responses import it releases
    wait_for(
        lambda: status_of(manager, "t_importResponses#0") == TaskInstance.STATUS_FINISHED,
        timeout=20,
        message="t_importResponses#0 finished",
    )
    assert manager.storage["t_importSubject#0"].status == TaskInstance.STATUS_FINISHED
    assert manager.storage["t_importResponses#0"].metadata["kwargs"]["pageReceived"] == {"page": 1}
    # And the session remembers which workflow it runs (for the operator commands)
    assert manager.storage.metadata["workflow"] == "questionnaire"


def test_inline_and_file_workflows_load_the_same(workflows):
    # Given the same configuration inline and in a file
    # When both are loaded by name
    # Then they give equal, validated task configurations
    assert load_workflow("inline") == load_workflow("questionnaire")
    assert load_workflow("inline")["t_importResponses"].and_every == "pageReceived"
    # And callers get a private copy they may change without touching settings
    get_workflow("inline")["t_importSubject"]["after"].append("oops")
    assert get_workflow("inline") == QUESTIONNAIRE


def test_starting_twice_keeps_fired_triggers(workflows, unique_uid):
    # Given a started session that has seen its first page
    manager = start_session(unique_uid, workflow="inline")
    manager.fire("firstPageReceived", {"page": 1})
    # When another request starts it again
    start_session(unique_uid, workflow="inline")
    # Then nothing is lost: the instance still holds the first page
    assert manager.storage["t_importSubject#0"].kwargs == {"firstPageReceived": {"page": 1}}
    assert manager.waiting_on() == {"t_importSubject#0": ["questionnaireComplete"]}


def test_a_typo_names_workflow_task_directive_and_the_fix(settings, unique_uid):
    # Given a workflow with a misspelt directive
    bad = {"t_importResponses": {"after": ["pageReceived"], "run": PASS, "andevery": "x"}}
    settings.TRIGGERS = {"WORKFLOWS": {"survey": bad}}
    # When a view starts a session on it
    with pytest.raises(ConfigurationError) as caught:
        start_session(unique_uid, workflow="survey")
    # Then the error names the workflow, the task and the directive, and suggests the fix
    error = caught.value
    where = (error.workflow, error.task, error.directive)
    assert where == ("survey", "t_importResponses", "andevery")
    assert error.suggestion == "andEvery"
    assert "did you mean 'andEvery'?" in str(error)
    # And nothing was stored for the session
    assert CacheStorageBackend(unique_uid).tasks == {}


def test_unknown_workflow_suggests_the_declared_one(workflows):
    # Given the declared workflows; when a view asks for a misspelt one
    with pytest.raises(UnknownWorkflowError) as caught:
        get_workflow("questionaire")
    # Then it is told which exist and which it meant
    assert caught.value.suggestion == "questionnaire"
    assert "'inline', 'questionnaire'" in str(caught.value)


def test_default_workflow_is_used_when_none_is_named(workflows, settings, unique_uid):
    # Given a default workflow in settings
    settings.TRIGGERS = {**settings.TRIGGERS, "DEFAULT_WORKFLOW": "inline"}
    # When a session is started without naming one
    manager = start_session(unique_uid)
    # Then it runs the default workflow
    assert sorted(manager.storage.tasks) == ["t_importResponses", "t_importSubject"]


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read the workflow file"),
        ("{not json", "not valid JSON: Expecting property name"),
        ("[1, 2]", "must hold one JSON object"),
    ],
)
def test_unreadable_workflow_files_are_reported_with_their_path(
    settings, tmp_path, content, expected
):
    # Given a workflow file that is missing, not JSON, or not an object
    path = tmp_path / "broken.json"
    if content is not None:
        path.write_text(content)
    settings.TRIGGERS = {"WORKFLOWS": {"broken": str(path)}}
    # When it is loaded
    with pytest.raises(WorkflowFileError) as caught:
        get_workflow("broken")
    # Then the error names the workflow, the file and what is wrong with it
    assert caught.value.workflow == "broken"
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_settings_choose_manager_storage_and_a_separate_cache_alias(settings, unique_uid):
    # Given a project that keeps trigger state in its own cache alias and uses its own manager
    settings.CACHES = {
        **settings.CACHES,
        "triggers": {**settings.CACHES["default"], "KEY_PREFIX": "separate"},
    }
    settings.TRIGGERS = {
        "MANAGER": f"{__name__}.CountingManager",
        "STORAGE": "cache",
        "STORAGE_OPTIONS": {"cache": "triggers"},
    }
    # When a view asks for a manager
    manager = get_trigger_manager(unique_uid)
    # Then both come from the settings, and state goes to the separate alias
    assert type(manager) is CountingManager
    assert isinstance(manager.storage, CacheStorageBackend)
    assert manager.storage.cache_name == "triggers"
    manager.update_configuration({"t_a": {"after": ["a"], "run": PASS}})
    assert list(get_trigger_manager(unique_uid).storage.tasks) == ["t_a"]
    assert CacheStorageBackend(unique_uid, cache="default").tasks == {}
    # And an explicit argument still wins over the settings
    assert type(get_trigger_manager(unique_uid, manager="default")) is TriggerManager


def test_find_problems_reports_every_problem_at_once():
    # Given a workflow with several independent mistakes
    configuration = {
        "t_typo": {"after": ["a"], "run": PASS, "unles": ["b"]},
        "t_runner": {"after": ["a"], "run": PASS, "using": "celerry"},
        "t_noTask": {"after": ["a"], "run": "tests.tasks.DoesNotExist"},
        "t_ping": {"after": ["a"], "run": "tests.celery_app.ping_task"},
        "t_x": {"after": ["t_y"], "run": PASS},
        "t_y": {"after": ["t_x"], "run": PASS},
    }
    # When it is checked
    problems = find_problems(configuration, "survey")
    # Then each mistake is reported with its task, directive and a hint
    found = {(p.kind, p.task, p.directive, p.suggestion) for p in problems}
    assert found == {
        ("directive", "t_typo", "unles", "unless"),
        ("using", "t_runner", "using", "celery"),
        ("run", "t_noTask", "run", None),
        ("run", "t_ping", "run", None),
        ("cycle", "t_x", "after", None),
    }
    assert all(p.workflow == "survey" and p.hint for p in problems)
    by_task = {p.task: p for p in problems}
    assert "is not a TriggerTask subclass" in by_task["t_ping"].message
    assert "t_x -> t_y -> t_x" in by_task["t_x"].message
