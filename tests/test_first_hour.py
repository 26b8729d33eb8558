"""A new user's first hour, followed literally: the README's install command,
then docs/getting-started.rst step by step, to a task finished by a real
Celery worker.

The test reads the page itself -- every ``$`` command of its console blocks
and every ``literalinclude`` whose caption names a project file -- so the
page and this test cannot drift apart: a command or file the page gets wrong
fails here. What it does that the page does not, and why:

* The wheel is built from this checkout and installed offline, with the
  README's command plus ``--no-index --find-links DIST``, into a fresh
  virtualenv that sees the test environment's installed packages (see
  ``tests/test_packaging.py:fresh_venv``): pip then resolves every
  dependency the wheel declares against what is installed, and fails if one
  is missing, without needing the package index.
* ``django-admin`` and ``celery`` are small launchers in the virtualenv's
  ``bin`` (their packages come from the test environment, whose own scripts
  start another interpreter).
* A few settings are appended after the page's: this run's own Celery queue,
  broker key prefix and cache key prefixes, so runs never meet.
* ``runserver`` and a browser are replaced by Django's test client with CSRF
  checks on, in a process of the new project.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.test_packaging import DIST_NAME, build_wheel, clean_env, fresh_venv, pip
from tests.utils import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = DOCS / "getting-started.rst"
README = ROOT / "README.rst"
APPEND = "(add at the end)"


# -- reading the page -----------------------------------------------------------


@dataclass
class Command:
    argv: list[str]
    output: list[str]  # the lines the page shows after it, if any


@dataclass
class File:
    target: str  # path in the project, from the caption
    text: str
    append: bool


def _block(lines: list[str], start: int) -> tuple[dict[str, str], list[str], int]:
    """The options and indented body of the directive at ``lines[start]``."""
    options: dict[str, str] = {}
    body: list[str] = []
    i = start + 1
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
        line = lines[i]
        match = re.match(r"^   :([\w-]+):\s*(.*)$", line)
        if match and not body:
            options[match[1]] = match[2]
        elif line.strip() or body:
            body.append(line[3:])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    return options, body, i


def page_steps(text: str) -> list[Command | File]:
    """Every console command and every captioned project file, in page order."""
    lines = text.splitlines()
    steps: list[Command | File] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(".. code-block:: console"):
            _, body, i = _block(lines, i)
            for entry in body:
                if entry.startswith("$ "):
                    steps.append(Command(shlex.split(entry[2:], comments=True), []))
                elif entry.strip():
                    assert steps and isinstance(steps[-1], Command), entry
                    steps[-1].output.append(entry)
            continue
        match = re.match(r"^\.\. literalinclude:: (\S+)", line)
        if match:
            options, _, i = _block(lines, i)
            caption = options.get("caption", "")
            if "/" in caption.split(" ")[0]:
                unknown = set(options) - {"language", "caption", "start-after"}
                assert not unknown, f"{match[1]}: this test cannot apply {sorted(unknown)}"
                source = (DOCS / match[1]).read_text()
                if "start-after" in options:
                    # Sphinx keeps what follows the first line holding the marker.
                    before, _, after = source.partition(options["start-after"])
                    assert after, f"{match[1]} lacks {options['start-after']!r}"
                    source = after.split("\n", 1)[1]
                steps.append(File(caption.split(" ")[0], source, caption.endswith(APPEND)))
            continue
        i += 1
    return steps


def readme_install_command() -> list[str]:
    match = re.search(r"^Install\n=+\n\n\.\. code-block:: sh\n\n   (.+)$", README.read_text(), re.M)
    assert match, "README has no install command"
    return shlex.split(match[1])


# -- the new user's project ---------------------------------------------------------


def _launchers(python: Path) -> None:
    for name, module in (("django-admin", "django"), ("celery", "celery")):
        script = python.parent / name
        script.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
        script.chmod(0o755)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"$ {shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done


DRIVER = r'''
"""The browser and runserver's stand-in: Django's test client, CSRF checks on."""
import json, os, sys, threading, time, traceback

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
import django

django.setup()
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # as Django's test runner does: allows host 'testserver'
client = Client(enforce_csrf_checks=True)
base = f"/questionnaire/{sys.argv[1]}/"
report = {}


def post(url, token, body=None):
    response = client.post(
        base + url, json.dumps(body or {}), content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 200, (url, response.status_code, response.content)
    return response.json()


def respondent():
    report["refused_without_token"] = client.post(base + "start/").status_code
    client.get(base)  # the page loads the status view first: it sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    report["start"] = post("start/", token)
    report["page2"] = post("pages/2/", token, {"answers": {"q3": 4, "q4": 5}})
    report["page1"] = post("pages/1/", token, {"name": "Ada", "email": "Ada@Example.com",
                                               "answers": {"q1": 5, "q2": 4}})
    report["finish"] = post("finish/", token, {"answers": {"q1": 5, "q2": 4, "q3": 4, "q4": 5}})
    deadline = time.monotonic() + 30
    while True:  # what the page's script would poll
        instances = client.get(base).json()["instances"]
        done = "t_sendReport#0" in instances and set(instances.values()) == {"finished"}
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    report["instances"] = instances


def in_a_request_thread():
    try:
        respondent()
    except Exception:
        report["error"] = traceback.format_exc()


# runserver (and most WSGI servers) handle each request in a thread of their
# own: fire() must reach the project's Celery app from there too.
thread = threading.Thread(target=in_a_request_thread)
thread.start()
thread.join()
print(json.dumps(report))
'''


class Worker:
    """The page's ``celery -A project worker`` command, in the background."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd.parent / "worker.log"
        self.output = self.log.open("w")
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for(
            lambda: " ready." in self.text() or self.process.poll() is not None,
            timeout=60,
            message="the worker to start",
        )
        assert self.process.poll() is None, f"the worker exited:\n{self.text()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.output.close()


def _legacy_environment() -> bool:
    """The djangorediscache tox env: redis-py 3 for django-redis-cache, which
    the README says needs ``pip install --no-deps`` and an AMQP broker."""
    return int(version("redis").split(".")[0]) < 4


def _test_settings(run: str, broker: str | None) -> str:
    tail = [
        "",
        "# -- tests/test_first_hour.py: this run's own queue and keys ---------------",
        f"CELERY_TASK_DEFAULT_QUEUE = {run!r}",
        f'CELERY_BROKER_TRANSPORT_OPTIONS = {{"global_keyprefix": "{run}:"}}',
        f'CACHES["default"]["KEY_PREFIX"] = {run!r}',
        f'CACHES["triggers"]["KEY_PREFIX"] = {run!r}',
    ]
    if broker:
        tail.append(f"CELERY_BROKER_URL = {broker!r}")
    return "\n".join(tail) + "\n"


def _forget(redis_url: str, run: str, broker: str | None) -> None:
    """Remove what this run left in Redis (and its queue on an AMQP broker)."""
    for db in (0, 1, 2):
        client = redis.Redis.from_url(f"{redis_url}/{db}")
        try:
            for pattern in (f"{run}:*", f"*{run}*"):
                keys = list(client.scan_iter(match=pattern, count=500))
                if keys:
                    client.delete(*keys)
        finally:
            client.close()
    if broker:
        from kombu import Connection

        with Connection(broker) as connection:
            channel = connection.default_channel
            channel.queue_delete(run)
            channel.exchange_delete(run)


@pytest.mark.timeout(300)
def test_the_first_hour_follows_the_readme_and_getting_started(tmp_path, redis_url):
    steps = page_steps(PAGE.read_text())
    install = readme_install_command()
    legacy = _legacy_environment()
    if legacy:
        # README: django-redis-cache "needs a hand-assembled environment
        # (pip install --no-deps triggers-django next to redis<4)".
        assert f"``pip install\n--no-deps {DIST_NAME}``" in README.read_text()
        install = ["pip", "install", "--no-deps", DIST_NAME]
    broker = None if settings.CELERY_BROKER_URL.startswith("redis") else settings.CELERY_BROKER_URL
    run = f"first-hour-{uuid.uuid4().hex[:12]}"

    # Given the wheel users would download, and a fresh virtualenv
    wheel = build_wheel(tmp_path / "dist")
    python = fresh_venv(tmp_path / "venv")
    _launchers(python)
    env = clean_env(PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}", REDIS_URL=redis_url)
    cwd = tmp_path / "work"
    cwd.mkdir()
    worker: Worker | None = None
    timings: dict[str, float] = {}
    try:
        # When the README's install and the page's steps are followed in order
        started = time.monotonic()
        installs = [s for s in steps if isinstance(s, Command) and s.argv[:2] == ["pip", "install"]]
        assert [s.argv for s in installs] == [readme_install_command()], (
            "the page and the README install differently"
        )
        for step in steps:
            if isinstance(step, File):
                path = cwd / step.target
                assert path.parent.is_dir(), f"{step.target}: the page never created its folder"
                if step.append:
                    assert path.is_file(), f"{step.target}: nothing to add to"
                    path.write_text(path.read_text() + "\n" + step.text)
                    if step.target.endswith("settings.py"):
                        path.write_text(path.read_text() + _test_settings(run, broker))
                else:
                    path.write_text(step.text)
                continue
            argv = step.argv
            if argv[:2] == ["pip", "install"]:
                offline = ["--isolated", "--no-index", "--find-links", str(wheel.parent)]
                pip(python, "install", *offline, *install[2:], env=env)
                timings["installed"] = time.monotonic() - started
            elif argv[0] == "cd":
                cwd = cwd / argv[1]
            elif argv[:2] == ["python", "manage.py"] and argv[2] == "runserver":
                continue  # the driver below stands in for the server and the browser
            elif argv[0] == "celery":
                worker = Worker([str(python.parent / "celery"), *argv[1:]], cwd, env)
                worker.wait_ready()
                timings["worker ready"] = time.monotonic() - started
            else:
                executable = python if argv[0] == "python" else python.parent / argv[0]
                done = _run([str(executable), *argv[1:]], cwd, env)
                for expected in step.output:
                    assert expected in done.stdout + done.stderr, (
                        f"$ {shlex.join(argv)} did not print {expected!r}:\n"
                        f"{done.stdout}\n{done.stderr}"
                    )
        assert worker is not None, "the page never starts a worker"

        # ... and a respondent goes through the questionnaire
        (cwd / "first_hour_driver.py").write_text(DRIVER)  # next to manage.py
        qid = uuid.uuid4().hex
        done = _run([str(python), "first_hour_driver.py", qid], cwd, env)
        timings["task finished"] = time.monotonic() - started
        report = json.loads(done.stdout.strip().splitlines()[-1])

        assert "error" not in report, report["error"]
        # Then Django's CSRF protection is on and the views pass it
        assert report["refused_without_token"] == 403
        # ... the first page's response names what both of its fires scheduled
        assert report["page1"]["scheduled"][:1] == ["t_importSubject#0"]
        # ... the worker ran every task, the cascades included
        assert report["instances"] == {
            "t_importResponses#0": "finished",
            "t_importResponses#1": "finished",
            "t_importSubject#0": "finished",
            "t_scoreQuestionnaire#0": "finished",
            "t_sendReport#0": "finished",
        }, worker.text()[-4000:]
        # ... with the installed wheel, not this checkout
        assert str(ROOT) not in worker.text()
        shown = pip(python, "show", "-f", DIST_NAME, env=env).stdout
        assert f"Location: {python.parent.parent}" in shown
        # ... and the report mail went out (console backend: the worker's output)
        wait_for(lambda: "You scored 90.0%." in worker.text(), timeout=10, message="the mail")
    finally:
        if worker is not None:
            worker.stop()
        _forget(redis_url, run, broker)
    print(
        "\nfirst hour: "
        + ", ".join(f"{name} at +{seconds:.1f}s" for name, seconds in timings.items())
        + " (from the start of pip install)"
    )

    # And without the project package's Celery import, `manage.py check` says so
    init = cwd / "project" / "__init__.py"
    init.write_text("")
    refused = subprocess.run(
        [str(python), "manage.py", "check"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert "triggers.E010" in refused.stderr
    assert "from .celery import app as celery_app" in refused.stderr


# -- the README's example ------------------------------------------------------------------


def _readme_blocks(language: str) -> list[str]:
    text = README.read_text()
    blocks = re.findall(rf"^\.\. code-block:: {language}\n\n((?:   .*\n|\n)+)", text, re.M)
    return ["\n".join(line[3:] for line in block.splitlines()) for block in blocks]


def _undefined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - defined


def test_readme_example_is_complete_and_the_getting_started_workflow():
    examples = DOCS / "examples" / "questionnaire"
    # Given the README's example
    python_blocks = [b for b in _readme_blocks("python") if "questionnaire/" in b]
    [workflow] = _readme_blocks("json")
    # Then its workflow is the one Getting started builds
    assert json.loads(workflow) == json.loads((examples / "workflow.json").read_text())
    # ... its code names nothing it does not define or import
    for block in python_blocks:
        assert not _undefined_names(block), block
    # ... its tasks are the docs' tasks, line for line
    tasks = next(b for b in python_blocks if b.startswith("# questionnaire/tasks.py"))
    docs_tasks = (examples / "tasks.py").read_text()
    for name in re.findall(r"^class (\w+)", tasks, re.M):
        shown = tasks[tasks.index(f"class {name}") :].split("\n\n\nclass ")[0].strip()
        assert shown in docs_tasks, f"README's {name} differs from docs/examples"
    # ... and its views fire what the docs' views fire
    views = next(b for b in python_blocks if b.startswith("# questionnaire/views.py"))
    docs_views = (examples / "views.py").read_text()
    for fired in re.findall(r'fire\("(\w+)"', views):
        assert f'fire("{fired}"' in docs_views


def test_every_install_command_names_the_distribution():
    # `triggers` on PyPI is another project: an install of that name in the
    # README or the docs would give a new user the wrong package.
    pages = [README, *sorted(DOCS.glob("*.rst"))]
    for page in pages:
        text = re.sub(r"\s+", " ", page.read_text())
        for command in re.findall(r"pip install (?:--?[\w-]+ )*'?([\w.-]+)", text):
            if command.startswith("triggers"):
                assert command.startswith(DIST_NAME), f"{page.name}: pip install {command}"
