"""What users install works: the sdist builds a wheel that carries the
package's data files, and that wheel, installed into a fresh virtualenv away
from this checkout, runs a workflow against the real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """
SECRET_KEY = "packaging-test"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "triggers"]
DATABASES = {{}}
CACHES = {{
    "default": {{
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": {location!r},
        "KEY_PREFIX": {prefix!r},
        "TIMEOUT": 600,
    }},
}}
TRIGGERS = {{"DEFAULT_RUNNER": "threading", "WORKFLOWS": {{"hello": "hello.json"}}}}
BASE_DIR = {base!r}
"""

TASKS = """
from triggers.task import TriggerTask


class Greet(TriggerTask):
    def _run(self, context):
        return {"greeting": "hello " + context.trigger_kwargs["arrived"]["name"]}


class Shout(TriggerTask):
    def _run(self, context):
        return {"shout": context.trigger_kwargs["t_greet"]["greeting"].upper()}
"""

WORKFLOW = {
    "t_greet": {"after": ["arrived"], "run": "hello_tasks.Greet"},
    "t_shout": {"after": ["t_greet"], "run": "hello_tasks.Shout"},
}

SCRIPT = """
import json, sys
from importlib import resources
from importlib.metadata import entry_points

import django
django.setup()

import triggers
from triggers.runners.threading import ThreadingTaskRunner
from triggers.shortcuts import start_session

manager = start_session(sys.argv[1], "hello")
manager.fire("arrived", {"name": "wheel"})
ThreadingTaskRunner.join_all()
print(json.dumps({
    "package": triggers.__file__,
    "typed": resources.files("triggers").joinpath("py.typed").is_file(),
    "runners": sorted(ep.name for ep in entry_points(group="triggers.runners")),
    "instances": {n: [i.status, i.metadata.get("result")]
                  for n, i in manager.storage.instances.items()},
}))
"""


def _run(args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.timeout(600)
def test_wheel_built_from_the_sdist_installs_and_runs_a_workflow(tmp_path, redis_url):
    # Given an sdist and a wheel built from it, as `python -m build` makes them
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path)
    (wheel,) = dist.glob("triggers-*.whl")
    (sdist,) = dist.glob("triggers-*.tar.gz")

    # Then the wheel holds the package with its data files and nothing else
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("py.typed", "storages/lua/fetch.lua", "storages/lua/commit.lua"):
        assert f"triggers/{data}" in names
    assert any(n.startswith("triggers/management/commands/triggers_") for n in names)
    assert {n.split("/")[0] for n in names} == {
        "triggers",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    # ... and the sdist can rebuild everything: tests and docs included
    members = tarfile.open(sdist).getnames()
    top = sdist.name.removesuffix(".tar.gz")
    for needed in ("tox.ini", "docs/conf.py", "tests/settings.py", "triggers/py.typed"):
        assert f"{top}/{needed}" in members

    # When the wheel is installed into a fresh virtualenv (dependencies from
    # the package index) and a small project far from this checkout uses it
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)])
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello_settings.py").write_text(
        SETTINGS.format(
            location=f"{redis_url}/1", prefix=f"pkg-{uuid.uuid4().hex}", base=str(project)
        )
    )
    (project / "hello_tasks.py").write_text(TASKS)
    (project / "hello.json").write_text(json.dumps(WORKFLOW))
    (project / "run.py").write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO", "VIRTUAL"))}
    env.update(DJANGO_SETTINGS_MODULE="hello_settings", PYTHONPATH=str(project))
    check = _run([str(python), "-m", "django", "check"], cwd=project, env=env)
    done = _run([str(python), "run.py", "pkg-session"], cwd=project, env=env)

    # Then the installed package (not the checkout) ran the workflow and its cascade
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(venv)
    assert report["typed"] is True
    assert report["runners"] == ["celery", "threading"]
    assert report["instances"] == {
        "t_greet#0": ["finished", {"greeting": "hello wheel"}],
        "t_shout#0": ["finished", {"shout": "HELLO WHEEL"}],
    }
    assert "no issues" in check.stdout
