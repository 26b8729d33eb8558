"""The documentation's examples run, and say what the library does.

Every Python example in docs/ is either a doctest in an .rst page (run here
with the standard doctest module) or a file under docs/examples/ included
with ``literalinclude`` (imported and exercised here).
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
import unittest
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import RequestFactory

from triggers.runners.threading import ThreadingTaskRunner
from triggers.shortcuts import get_trigger_manager

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
WORKFLOW_FILE = EXAMPLES / "questionnaire" / "workflow.json"
PAGES = sorted(DOCS.glob("*.rst"))
DOCTEST_PAGES = [p for p in PAGES if re.search(r"^>>> ", p.read_text(), re.M)]


@pytest.fixture
def docs_env(settings, monkeypatch):
    """What the docs assume: the example packages importable, tasks run in
    threads of this process (``DEFAULT_RUNNER='threading'``), and a cache
    alias of their own so the pages' fixed session UIDs never meet another
    run's."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    # What the project's Celery app does at startup (autodiscover_tasks()):
    # configurations name tasks, they never make the library import modules.
    importlib.import_module("questionnaire.tasks")
    caches = dict(django_settings.CACHES)
    caches["docs"] = dict(caches["default"], KEY_PREFIX=f"docs-{uuid.uuid4().hex}")
    settings.CACHES = caches
    settings.TRIGGERS = dict(
        django_settings.TRIGGERS,
        CACHE="docs",
        DEFAULT_RUNNER="threading",
        TIMEOUT=600,
        WORKFLOWS={"questionnaire": str(WORKFLOW_FILE)},
    )
    yield
    ThreadingTaskRunner.join_all()


def test_some_pages_have_doctests():
    assert {p.name for p in DOCTEST_PAGES} >= {"getting-started.rst", "configuration.rst"}


@pytest.mark.parametrize("page", DOCTEST_PAGES, ids=lambda p: p.name)
def test_page_examples_run(page, docs_env, mailoutbox):
    # Given the page's examples, in order, in one namespace
    test = doctest.DocTestParser().get_doctest(page.read_text(), {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    # When doctest runs them against the real Redis-backed storage
    result = runner.run(test, out=report.append)
    # Then every shown output is what the library produced
    assert result.attempted > 0
    assert result.failed == 0, "".join(report)


def test_python_examples_are_tested_forms_only():
    # Untested code-blocks would drift from the library; Python goes in
    # doctests or literalinclude'd files, other blocks are shell/JSON/ini.
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"^\.\. code-block:: *(\S+)", text, re.M)
        assert not [b for b in blocks if b.startswith(("python", "py"))], page.name
        for target in re.findall(r"^\.\. literalinclude:: *(\S+)", text, re.M):
            assert (DOCS / target).is_file(), f"{page.name} includes missing {target}"


def test_every_example_file_is_shown_in_the_docs():
    shown = set()
    for page in PAGES:
        shown |= set(re.findall(r"^\.\. literalinclude:: *(\S+)", page.read_text(), re.M))
    files = {
        str(p.relative_to(DOCS))
        for p in EXAMPLES.rglob("*")
        if p.suffix in (".py", ".json") and p.name != "__init__.py"
    }
    assert files <= shown, f"example files no page includes: {sorted(files - shown)}"


def _post(view, body=None, **kwargs):
    request = RequestFactory().post(
        "/", data=json.dumps(body or {}), content_type="application/json"
    )
    response = view(request, **kwargs)
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def test_questionnaire_views_run_the_workflow_end_to_end(docs_env, mailoutbox):
    from questionnaire import views

    qid = uuid.uuid4().hex
    # Given a started questionnaire
    _post(views.start, questionnaire_id=qid)

    # When the respondent submits two pages and finishes
    _post(views.submit_page, {"answers": {"q1": 3}}, questionnaire_id=qid, page=2)
    first = _post(
        views.submit_page,
        {"name": "Ada", "email": "Ada@Example.com", "answers": {"q2": 5}},
        questionnaire_id=qid,
        page=1,
    )
    _post(views.finish, {"answers": {"q1": 3, "q2": 5}}, questionnaire_id=qid)
    ThreadingTaskRunner.join_all()

    # Then every page was imported, the score computed and one report sent
    manager = get_trigger_manager(views.session_uid(qid))
    statuses = {name: inst.status for name, inst in manager.storage.instances.items()}
    assert statuses == {
        "t_importResponses#0": "finished",
        "t_importResponses#1": "finished",
        "t_importSubject#0": "finished",
        "t_scoreQuestionnaire#0": "finished",
        "t_sendReport#0": "finished",
    }
    # The first page's response names what both of its fires scheduled
    assert first["scheduled"][:1] == ["t_importSubject#0"]
    assert manager.storage["t_scoreQuestionnaire#0"].metadata["result"]["score"] == 80.0
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]
    assert "80.0%" in mailoutbox[0].body


def test_withdrawn_questionnaire_is_never_scored(docs_env, mailoutbox):
    from questionnaire import views

    qid = uuid.uuid4().hex
    # Given a respondent who withdrew after the first page
    _post(views.start, questionnaire_id=qid)
    _post(
        views.submit_page,
        {"name": "Bob", "email": "bob@example.com", "answers": {}},
        questionnaire_id=qid,
        page=1,
    )
    _post(views.withdraw, questionnaire_id=qid)

    # When the questionnaire is completed anyway
    _post(views.finish, {"answers": {"q1": 1}}, questionnaire_id=qid)
    ThreadingTaskRunner.join_all()

    # Then scoring was abandoned and no report went out
    storage = get_trigger_manager(views.session_uid(qid)).storage
    assert storage["t_scoreQuestionnaire#0"].status == "abandoned"
    assert "t_sendReport#0" not in storage
    assert mailoutbox == []


def test_the_testing_page_example_tests_pass(docs_env):
    # Given the questionnaire's own workflow tests (docs/examples/questionnaire/tests.py)
    from questionnaire import tests as example_tests

    suite = unittest.defaultTestLoader.loadTestsFromModule(example_tests)
    result = unittest.TestResult()

    # When they run
    suite.run(result)

    # Then all of them pass
    problems = [f"{test}: {trace}" for test, trace in result.errors + result.failures]
    assert not problems, "\n".join(problems)
    assert result.testsRun == 4


def test_example_project_settings_and_celery_app_work(tmp_path):
    # Given the example project's settings and Celery app, in a fresh process
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from project import celery_app\n"
        "celery_app.loader.import_default_modules()\n"
        "assert settings.TRIGGERS['CACHE'] in settings.CACHES\n"
        "from triggers.workflows import load_workflow\n"
        "assert load_workflow('questionnaire')\n"
        "names = sorted(n for n in celery_app.tasks if n.startswith('questionnaire.'))\n"
        "print(' '.join(names))\n"
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(ROOT)]),
    )
    # When Django and Celery load them
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    # Then every task named by the workflow is registered with the app
    assert done.returncode == 0, done.stderr
    runs = sorted({cfg["run"] for cfg in json.loads(WORKFLOW_FILE.read_text()).values()})
    assert done.stdout.split() == runs


def test_workflow_picture_shows_every_task_and_trigger():
    svg = (DOCS / "_static" / "questionnaire.svg").read_text()
    workflow = json.loads(WORKFLOW_FILE.read_text())
    names = set(workflow)
    for cfg in workflow.values():
        names |= set(cfg["after"]) | set(cfg.get("unless", []))
        names |= {cfg["andEvery"]} if "andEvery" in cfg else set()
    missing = sorted(n for n in names if f">{n}<" not in svg)
    assert not missing, (
        f"questionnaire.svg lacks {missing}; regenerate it with docs/render_graph.py"
    )


# -- the reference pages keep up with the code ---------------------------------


def test_settings_reference_covers_every_key():
    from triggers import conf

    text = (DOCS / "settings.rst").read_text()
    missing = sorted(k for k in conf.KNOWN_KEYS if f"\n``{k}``\n" not in text)
    assert not missing, f"settings.rst does not document TRIGGERS keys {missing}"


def test_commands_page_covers_every_command_and_check():
    text = (DOCS / "commands.rst").read_text()
    commands = sorted(
        p.stem for p in (ROOT / "triggers" / "management" / "commands").glob("triggers_*.py")
    )
    assert commands, "no management commands found"
    assert not [c for c in commands if f"``{c}``" not in text]
    ids = set(re.findall(r"triggers\.[EW]\d{3}", (ROOT / "triggers" / "checks.py").read_text()))
    assert not sorted(i for i in ids if i not in text)


def test_api_reference_covers_every_public_module():
    documented = set(re.findall(r"^\.\. automodule:: *(\S+)", (DOCS / "api.rst").read_text(), re.M))
    internal = {"triggers.apps", "triggers.checks", "triggers.validation"}
    modules = {
        ".".join(("triggers", *p.relative_to(ROOT / "triggers").with_suffix("").parts))
        for p in (ROOT / "triggers").rglob("*.py")
        if not p.name.startswith("_") and not {"management", "migrations"} & set(p.parts)
    }
    # The coordinator's transaction and the modules split off it.
    parts = (".transaction", ".session_view", ".changeset", ".operations")
    internal |= {m for m in modules if m.endswith(parts)}
    assert not sorted(modules - internal - documented)
