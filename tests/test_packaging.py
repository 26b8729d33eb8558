"""What users install works: the sdist builds a wheel that carries the
package's data files, and that wheel, installed into a fresh virtualenv away
from this checkout, runs a workflow against the real Redis.

Everything here works offline: the build uses the test environment's
setuptools (no build isolation, so no package index), and the fresh
virtualenv sees the test environment's installed packages through a ``.pth``
file (see :func:`fresh_venv`) instead of downloading them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
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
CELERY_IMPORTS = ["hello.tasks"]
"""

# The usual Django + Celery wiring: the project package loads the app, which
# imports the task modules named in CELERY_IMPORTS.
INIT = "from .celery import app as celery_app\n"
CELERY = """
import os
from celery import Celery
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hello.settings")
app = Celery("hello")
app.config_from_object("django.conf:settings", namespace="CELERY")
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
    "t_greet": {"after": ["arrived"], "run": "hello.tasks.Greet"},
    "t_shout": {"after": ["t_greet"], "run": "hello.tasks.Shout"},
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


DIST_NAME = "triggers-django"


def _run(args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def build_dist(outdir: Path) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it, as ``python -m build`` makes
    them -- with this environment's setuptools instead of an isolated build
    environment from the package index."""
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(ROOT)])
    (wheel,) = outdir.glob("triggers_django-*.whl")
    (sdist,) = outdir.glob("triggers_django-*.tar.gz")
    return sdist, wheel


def build_wheel(outdir: Path) -> Path:
    """Just the wheel, straight from the checkout (offline, as above)."""
    build = [sys.executable, "-m", "build", "--no-isolation", "--wheel"]
    _run([*build, "--outdir", str(outdir), str(ROOT)])
    (wheel,) = outdir.glob("triggers_django-*.whl")
    return wheel


def _ours(name: str) -> bool:
    """A site-packages entry of this package (editable or not), which the
    fresh virtualenv must not see: it gets the wheel instead."""
    return name == "triggers" or name.startswith(("triggers_django", "__editable__"))


def fresh_venv(path: Path) -> Path:
    """A new virtualenv that sees the test environment's installed packages
    (Django, Celery, redis-py...) but not this package, and returns its
    interpreter.

    ``--system-site-packages`` would expose the base interpreter's packages,
    not those of the virtualenv running the tests, so a ``.pth`` file lists
    a directory of links to every site-packages entry except this package's.
    pip counts those packages as installed, so installing the wheel needs
    no package index.
    """
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    python = path / "bin" / "python"
    visible = path.parent / f"{path.name}-test-env"
    visible.mkdir()
    sources = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    for source in sorted(sources):
        for entry in source.iterdir():
            if _ours(entry.name) or entry.suffix == ".pth" or (visible / entry.name).exists():
                continue
            (visible / entry.name).symlink_to(entry)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "_test_environment.pth").write_text(f"{visible}\n")
    return python


def pip(python: Path, *args: str, **kwargs):
    """``pip ARGS`` for the virtualenv of ``python`` (that virtualenv has no
    pip of its own; this one acts on it through ``--python``)."""
    return _run([sys.executable, "-m", "pip", "--python", str(python), *args], **kwargs)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points into the test setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO", "VIRTUAL"))}
    env = {k: v for k, v in env.items() if not k.startswith(("PIP_", "CELERY_"))}
    env.update(extra)
    return env


@pytest.mark.timeout(300)
def test_wheel_built_from_the_sdist_installs_and_runs_a_workflow(tmp_path, redis_url):
    # Given an sdist and a wheel built from it, as `python -m build` makes them
    sdist, wheel = build_dist(tmp_path / "dist")

    # Then the wheel holds the package with its data files and nothing else
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("py.typed", "storages/lua/fetch.lua", "storages/lua/commit.lua"):
        assert f"triggers/{data}" in names
    assert any(n.startswith("triggers/management/commands/triggers_") for n in names)
    assert {n.split("/")[0] for n in names} == {
        "triggers",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    # ... under the distribution name, which declares what a Redis broker needs
    metadata = zipfile.ZipFile(wheel).read(wheel.name.split("-py3")[0] + ".dist-info/METADATA")
    assert f"Name: {DIST_NAME}" in metadata.decode()
    assert "Requires-Dist: celery[redis]" in metadata.decode()
    # ... and the sdist can rebuild everything: tests and docs included
    members = tarfile.open(sdist).getnames()
    top = sdist.name.removesuffix(".tar.gz")
    for needed in ("tox.ini", "docs/conf.py", "tests/settings.py", "triggers/py.typed"):
        assert f"{top}/{needed}" in members

    # When the wheel alone is installed into a fresh virtualenv (its
    # dependencies are the test environment's: no package index) and a small
    # project far from this checkout uses it
    python = fresh_venv(tmp_path / "venv")
    venv = python.parent.parent
    pip(python, "install", "--isolated", "-q", "--no-deps", "--no-index", str(wheel))
    project = tmp_path / "project"
    (project / "hello").mkdir(parents=True)
    (project / "hello" / "settings.py").write_text(
        SETTINGS.format(
            location=f"{redis_url}/1", prefix=f"pkg-{uuid.uuid4().hex}", base=str(project)
        )
    )
    (project / "hello" / "__init__.py").write_text(INIT)
    (project / "hello" / "celery.py").write_text(CELERY)
    (project / "hello" / "tasks.py").write_text(TASKS)
    (project / "hello.json").write_text(json.dumps(WORKFLOW))
    (project / "run.py").write_text(textwrap.dedent(SCRIPT))
    env = clean_env(DJANGO_SETTINGS_MODULE="hello.settings", PYTHONPATH=str(project))
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
    # ... and `manage.py check` found nothing wrong with the project
    assert "triggers.E" not in check.stdout + check.stderr
