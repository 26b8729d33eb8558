"""Sweeping timers across sessions (SPEC §14): ``fire_due_timers`` from
four racing processes applies each timer exactly once, a sweeper SIGKILLed
mid-way loses and repeats nothing, on Redis and PostgreSQL; the Celery beat
task (on a real worker) and ``manage.py triggers_timers`` (once and
``--loop``).

Run as ``python -m tests.test_timer_sweepers sweep ...`` it is the sweeper
process the multi-process tests start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contract_backends import POSTGRES_ALIAS
from tests.test_timers import COUNTING, _count, _manager, _now
from tests.utils import wait_for
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.due_index import CLAIM_SECONDS, index_for
from triggers.timers import fire_due_timers

# -- many sessions, many sweepers ---------------------------------------------------


def _spawn_sweeper(
    kind: str, option: str, now: datetime, hold: bool = False
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "tests.test_timer_sweepers",
        "sweep",
        kind,
        option,
        repr(now.timestamp()),
    ]
    if hold:
        args.append("--hold")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd()
    )


def _prefix_of(timer_storage: Callable[[str], Any]) -> str:
    from django.conf import settings

    return str(settings.CACHES["timers"]["KEY_PREFIX"])


def sweeper_target(timer_storage: Callable[[str], Any]) -> tuple[str, str]:
    """What a sweeper process needs to sweep ``timer_storage``'s due index:
    its kind (``"redis"``/``"database"``) and the cache key prefix or the
    database alias (see :func:`_setup_child`)."""
    if timer_storage(f"probe-{uuid.uuid4().hex}").name == "database":
        return "database", POSTGRES_ALIAS
    return "redis", _prefix_of(timer_storage)


@pytest.mark.parametrize("timer_storage", ["redis", "database"], indirect=True)
def test_racing_sweepers_in_four_processes_apply_each_timer_once(
    timer_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    kind, option = sweeper_target(timer_storage)
    # Given 40 sessions with a due timer each
    managers = [_manager(timer_storage) for _ in range(40)]
    for manager in managers:
        manager.fire("tick", delay=1)
    # When four sweepers run at once
    when = _now() + timedelta(seconds=5)
    sweepers = [_spawn_sweeper(kind, option, when) for _ in range(4)]
    children.extend(sweepers)
    applied = 0
    for sweeper in sweepers:
        out, err = sweeper.communicate(timeout=120)
        assert sweeper.returncode == 0, err
        applied += int(out.split()[-1])
    # Then every timer fired exactly once
    assert applied == 40
    assert [_count(m) for m in managers] == [1] * 40
    assert all(m.storage.timers == [] for m in managers)


@pytest.mark.parametrize("timer_storage", ["redis", "database"], indirect=True)
def test_a_sweeper_killed_mid_way_loses_nothing_and_repeats_nothing(
    timer_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    kind, option = sweeper_target(timer_storage)
    managers = [_manager(timer_storage) for _ in range(10)]
    for manager in managers:
        manager.fire("tick", delay=1)
    when = _now() + timedelta(seconds=5)
    # Given a sweeper that claimed the due timers and applied one of them
    sweeper = _spawn_sweeper(kind, option, when, hold=True)
    children.append(sweeper)
    assert sweeper.stdout is not None
    assert sweeper.stdout.readline().strip() == "HOLD"
    # When it is killed
    sweeper.send_signal(signal.SIGKILL)
    sweeper.wait(timeout=30)
    assert sum(_count(m) for m in managers) == 1
    # Then its claimed timers wait out the claim, and the next sweep applies
    # the nine others once each (the applied one is not applied again)
    probe = managers[0].storage
    assert fire_due_timers(now=when, storage=probe) == 0
    later = when + timedelta(seconds=CLAIM_SECONDS + 1)
    assert fire_due_timers(now=later, storage=probe) == 9
    assert [_count(m) for m in managers] == [1] * 10
    assert index_for(probe).count() == 0


# -- entry points --------------------------------------------------------------------


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_the_celery_task_and_the_command_sweep_the_configured_storage(
    timer_storage: Callable[[str], Any], settings: Any, threaded: None
) -> None:
    from django.core.management import call_command

    from triggers.tasks import fire_due_timers_task

    alias = timer_storage("probe").cache_name
    settings.TRIGGERS = {**settings.TRIGGERS, "STORAGE_OPTIONS": {"cache": alias}}
    manager = _manager(timer_storage)
    manager.fire("tick", delay=0)
    assert fire_due_timers_task.name == "triggers.fire_due_timers"
    assert fire_due_timers_task.run() == 1
    manager.fire("tick", delay=0)
    from io import StringIO

    out = StringIO()
    call_command("triggers_timers", "--json", stdout=out)
    assert '"applied": 1' in out.getvalue()
    assert _count(manager) == 2


@pytest.mark.parametrize("timer_storage", ["redis", "locmem"], indirect=True)
def test_triggers_inspect_shows_pending_timers(
    timer_storage: Callable[[str], Any], settings: Any
) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    manager = _manager(timer_storage)
    manager.fire("tick", {"n": 1}, delay=3600)
    options = manager.storage.get_init_kwargs()
    settings.TRIGGERS = {**settings.TRIGGERS, "STORAGE_OPTIONS": {"cache": options["cache"]}}
    out = StringIO()
    call_command("triggers_inspect", manager.storage.uid, stdout=out)
    assert "timer: tick due " in out.getvalue()
    out = StringIO()
    call_command("triggers_inspect", manager.storage.uid, "--json", stdout=out)
    (timer,) = json.loads(out.getvalue())["timers"]
    assert (timer["trigger"], timer["kwargs"]) == ("tick", {"n": 1})


def test_a_celery_worker_runs_the_beat_task(celery_worker: Any) -> None:
    # Given a due timer in the default cache (the worker's configured storage)
    from tests.celery_app import app

    manager = TriggerManager(CacheStorageBackend(f"timers-beat-{uuid.uuid4().hex}"))
    manager.update_configuration(COUNTING)
    manager.fire("tick", delay=0)
    # When beat sends the task to a real worker
    app.send_task("triggers.fire_due_timers")
    # Then the worker applies the timer
    wait_for(lambda: _count(manager) == 1, timeout=30, message="the worker fired the timer")
    assert manager.storage.timers == []


def _loop_process(prefix: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tests.test_timer_sweepers", "loop", prefix]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_the_command_loop_fires_timers_as_they_fall_due_until_stopped(
    timer_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    loop = _loop_process(_prefix_of(timer_storage))
    children.append(loop)
    manager = _manager(timer_storage)
    manager.fire("tick", delay=0.2)
    wait_for(lambda: _count(manager) == 1, timeout=30, message="the loop fired the timer")
    loop.send_signal(signal.SIGTERM)
    out, err = loop.communicate(timeout=30)
    assert loop.returncode == 0, err
    assert "Applied 1 due timer." in out


def test_the_command_loop_reports_a_redis_outage_and_keeps_going(
    children: list[subprocess.Popen[str]],
) -> None:
    # Given a loop whose Redis does not answer (a port nothing listens on)
    from examples.embedded_redis import free_port

    args = [sys.executable, "-m", "tests.test_timer_sweepers", "loop-away", str(free_port())]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    loop = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    children.append(loop)
    # Then each failed sweep is reported and the loop stays up until stopped
    assert loop.stderr is not None
    assert "sweep failed (" in loop.stderr.readline()
    assert "sweep failed (" in loop.stderr.readline()
    loop.send_signal(signal.SIGTERM)
    out, _ = loop.communicate(timeout=30)
    assert loop.returncode == 0
    assert "Applied 0 due timers." in out


# -- the sweeper processes -------------------------------------------------------------


def _setup_child(kind: str, option: str) -> BaseTriggerStorage:
    import django
    from django.conf import settings

    django.setup()
    if kind == "database":
        from triggers.storages.database import DatabaseStorageBackend

        return DatabaseStorageBackend("probe", database=option)
    settings.CACHES["timers"] = {**settings.CACHES["default"], "KEY_PREFIX": option}
    settings.TRIGGERS = {**settings.TRIGGERS, "STORAGE_OPTIONS": {"cache": "timers"}}
    return CacheStorageBackend("probe", cache="timers")


def _main(argv: list[str]) -> None:
    if argv[0] == "loop-away":
        _setup_child("redis", "timers-away")
        from django.conf import settings
        from django.core.management import call_command

        away = f"redis://127.0.0.1:{argv[1]}/0"
        settings.TRIGGERS = {**settings.TRIGGERS, "REDIS_CLIENT": away, "REDIS_TIMEOUT": 0.2}
        call_command("triggers_timers", "--loop", "--interval", "0.05")
        return
    if argv[0] == "loop":
        _setup_child("redis", argv[1])
        from django.core.management import call_command

        call_command("triggers_timers", "--loop", "--interval", "0.05")
        return
    _, kind, option, when, *flags = argv
    probe = _setup_child(kind, option)
    import triggers.timers as timers

    if "--hold" in flags:
        real = timers.apply_timer

        def apply_then_hold(*args: Any, **kwargs: Any) -> Any:
            outcome = real(*args, **kwargs)
            print("HOLD", flush=True)
            signal.pause()  # killed here, with the other claimed timers unapplied
            return outcome

        timers.apply_timer = apply_then_hold
    now = datetime.fromtimestamp(float(when), tz=UTC)
    print("applied", timers.fire_due_timers(now=now, storage=probe), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
