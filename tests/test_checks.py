"""``manage.py check`` validates TRIGGERS and every declared workflow, with
stable ids and hints."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from triggers.checks import check_celery_app, check_settings, check_workflows

PASS = "triggers.testing.PassThruTask"
GOOD = {"t_a": {"after": ["a"], "run": PASS}}
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


def by_id(messages, check_id):
    [found] = [m for m in messages if m.id == check_id]
    return found


def test_the_test_project_is_clean():
    # Given the suite's own settings (Redis cache, no workflows)
    # Then neither check reports anything
    assert check_settings() == [] and check_workflows() == [] and check_celery_app() == []


@override_settings(TRIGGERS=["CACHE", "default"])
def test_triggers_must_be_a_dict():
    assert ids(check_settings()) == ["triggers.E001"]
    assert check_workflows() == []


@override_settings(
    TRIGGERS={
        "LOCK_EXPIRE": 0,
        "TIMEOUT": -5,
        "BROKER_TIMEOUT": "5",
        "ON_LOST_SESSION": "ignore",
        "MANAGER": "defualt",
        "STORAGE": "nowhere.Storage",
        "DEFAULT_RUNNER": "celeri",
        "LOCK_EXPIRY": 3,
    }
)
def test_bad_values_and_typos_in_triggers():
    # Given settings with bad values and a misspelt key; when checked
    messages = check_settings()
    # Then each bad value is an error, the unknown key a warning with the likely key
    assert ids(messages) == ["triggers.E002"] * 7 + ["triggers.W001"]
    texts = "\n".join(m.msg for m in messages)
    assert "TRIGGERS['LOCK_EXPIRE'] must be a positive number, not 0" in texts
    assert "TRIGGERS['TIMEOUT'] must be positive seconds or None, not -5" in texts
    assert "TRIGGERS['BROKER_TIMEOUT'] must be positive seconds or None, not '5'" in texts
    assert "TRIGGERS['ON_LOST_SESSION'] must be one of 'raise', 'restart'" in texts
    hints = {m.msg.split("]")[0]: m.hint for m in messages}
    assert hints["TRIGGERS['MANAGER'"] == "Did you mean 'default'?"
    assert hints["TRIGGERS['DEFAULT_RUNNER'"] == "Did you mean 'celery'?"
    assert by_id(messages, "triggers.W001").hint == "Did you mean 'LOCK_EXPIRE'?"


@override_settings(TRIGGERS={"CACHE": "triggers"})
def test_missing_cache_alias():
    error = by_id(check_settings(), "triggers.E003")
    assert "'triggers' that holds trigger sessions is not in CACHES" in error.msg


@override_settings(CACHES={"default": LOCMEM}, TRIGGERS={})
def test_a_non_redis_cache_without_a_lock_client_is_a_warning():
    # Given session state in a local-memory cache and no REDIS_CLIENT
    warning = by_id(check_settings(), "triggers.W002")
    # Then the operator learns which caches keep sessions safe across
    # processes (LocMem does not), and how to fix it
    assert "safe across processes only on a shared cache whose add() is atomic" in warning.msg
    assert "not LocMem" in warning.msg
    assert "REDIS_CLIENT" in warning.hint


@override_settings(CACHES={"default": LOCMEM}, TRIGGERS={"REDIS_CLIENT": "redis://127.0.0.1:1"})
def test_a_lock_client_silences_the_non_redis_warning():
    assert check_settings() == []


def test_workflow_problems_have_ids_hints_and_names(tmp_path):
    # Given workflows with every kind of problem
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    workflows = {
        "good": GOOD,
        "typo": {"t_a": {"after": ["a"], "run": PASS, "andevery": "a"}},
        "runner": {"t_a": {"after": ["a"], "run": PASS, "using": "threadin"}},
        "unregistered": {"t_a": {"after": ["a"], "run": "tests.tasks.NotATask"}},
        "bare": {"t_a": {"after": ["a"], "run": "import_subject"}},
        "cycle": {"t_a": {"after": ["t_b"], "run": PASS}, "t_b": {"after": ["t_a"], "run": PASS}},
        "file": str(broken),
        "missing": str(tmp_path / "missing.json"),
        "number": 42,
    }
    with override_settings(TRIGGERS={"WORKFLOWS": workflows}):
        # When checked
        messages = check_workflows()
    # Then each problem has its own id, names where it is, and carries a hint
    found = {m.obj: m for m in messages}
    expected = {
        "typo": "triggers.E006",
        "runner": "triggers.E007",
        "unregistered": "triggers.E008",
        "bare": "triggers.W003",
        "cycle": "triggers.E009",
        "file": "triggers.E005",
        "missing": "triggers.E005",
        "number": "triggers.E004",
    }
    assert {obj: m.id for obj, m in found.items()} == {
        f"TRIGGERS['WORKFLOWS'][{name!r}]": check_id for name, check_id in expected.items()
    }
    typo = found["TRIGGERS['WORKFLOWS']['typo']"]
    assert typo.msg.startswith("workflow 'typo', task 't_a', directive 'andevery'")
    assert typo.hint == "Did you mean 'andEvery'?"
    assert found["TRIGGERS['WORKFLOWS']['runner']"].hint == "Did you mean 'threading'?"
    assert "t_a -> t_b -> t_a" in found["TRIGGERS['WORKFLOWS']['cycle']"].msg
    assert all(m.hint for m in messages)


@override_settings(TRIGGERS={"WORKFLOWS": {"good": GOOD}, "DEFAULT_WORKFLOW": "god"})
def test_default_workflow_must_be_declared():
    error = by_id(check_workflows(), "triggers.E002")
    assert "DEFAULT_WORKFLOW" in error.msg and "'good'" in error.hint


@override_settings(TRIGGERS={"WORKFLOWS": ["a.json"]})
def test_workflows_must_be_a_dict():
    assert ids(check_workflows()) == ["triggers.E004"]


def test_manage_py_check_fails_on_a_bad_workflow(tmp_path):
    # Given a project whose workflow file has a misspelt directive
    path = tmp_path / "survey.json"
    path.write_text(json.dumps({"t_a": {"after": ["a"], "run": PASS, "unles": ["b"]}}))
    with override_settings(TRIGGERS={"WORKFLOWS": {"survey": str(path)}}):
        # When `manage.py check` runs
        with pytest.raises(SystemCheckError) as caught:
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    # Then it stops with the id, the place and the hint
    text = str(caught.value)
    assert "triggers.E006" in text
    assert "workflow 'survey', task 't_a', directive 'unles': unknown directive" in text
    assert "HINT: Did you mean 'unless'?" in text
    # ... said once: the message leaves the suggestion to the hint
    assert text.lower().count("did you mean") == 1


# -- the Celery app a fire would use -------------------------------------------


def _check_output() -> str:
    with pytest.raises(SystemCheckError) as caught:
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    return str(caught.value)


@pytest.fixture
def no_project_celery_app(monkeypatch):
    """This process as it is when the project package never imports its
    Celery app: no app created, so Celery would fall back to its own."""
    from celery import _state

    monkeypatch.setattr(_state, "default_app", None)
    monkeypatch.setattr(_state._tls, "current_app", None)


def test_manage_py_check_catches_celerys_fallback_app(no_project_celery_app):
    # Given a process in which no project Celery app was loaded
    # When `manage.py check` runs
    text = _check_output()
    # Then it stops, says where the messages would go and how to wire the app
    assert "triggers.E010" in text
    assert "amqp://guest@localhost//" in text
    assert "from .celery import app as celery_app" in text


def test_manage_py_check_catches_an_app_current_in_one_thread_only(monkeypatch):
    # Given a project app created before DJANGO_SETTINGS_MODULE was set:
    # current in the thread that made it, but not the default of the others
    from celery import Celery, _state

    app = Celery("survey", broker="redis://127.0.0.1:6379/9", set_as_current=False, fixups=[])
    monkeypatch.setattr(_state, "default_app", None)
    monkeypatch.setattr(_state._tls, "current_app", app)
    # When `manage.py check` runs
    text = _check_output()
    # Then it explains that request threads would not use it
    assert "triggers.E010" in text
    assert "'survey' is current only in the thread that created it" in text
    assert "DJANGO_SETTINGS_MODULE" in text


@override_settings(TRIGGERS={"DEFAULT_RUNNER": "threading"})
def test_the_celery_app_check_is_quiet_when_tasks_run_in_threads(no_project_celery_app):
    assert check_celery_app() == []


@override_settings(CELERY_BROKER_URL="redis://:s3cret@broker.example:6379/7")
def test_manage_py_check_catches_a_broker_other_than_the_configured_one(monkeypatch):
    # Given settings naming one broker and, as the process's Celery app, one
    # configured by hand with another (not from Django's settings)
    from celery import Celery, _state

    app = Celery("survey", broker="redis://127.0.0.1:6379/9", set_as_current=False, fixups=[])
    monkeypatch.setattr(_state, "default_app", app)
    # When `manage.py check` runs
    text = _check_output()
    # Then it names both brokers (without the password) and the usual cause
    assert "triggers.E011" in text
    assert "'survey' sends to broker redis://127.0.0.1:6379/9" in text
    assert "not CELERY_BROKER_URL redis://:**@broker.example:6379/7" in text
    assert "s3cret" not in text
    assert "config_from_object('django.conf:settings', namespace='CELERY')" in text
