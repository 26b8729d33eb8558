"""Delayed fires (SPEC §14): ``fire(..., delay=/at=)``, ``storage.timers``,
``cancel_timers``, and ``fire_due_timers`` applying each timer exactly once,
with sweepers racing in several processes and a sweeper killed mid-way,
on Redis, PostgreSQL, a plain cache and a custom backend.

Run as ``python -m tests.test_timers sweep ...`` it is the sweeper process
the multi-process tests start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import unittest
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contract_backends import DEV, PASS, POSTGRES_ALIAS, DictStorage
from tests.utils import wait_for
from triggers.exceptions import InvalidTriggerError, InvalidTriggerTypeError
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.due_index import CLAIM_SECONDS, DueEntry, index_for
from triggers.testing import TriggerManagerTestCaseMixin, run_due_timers
from triggers.timers import fire_due_timers

#: Each fire of "tick" makes a new instance that never runs ("never" does
#: not fire): counting instances counts how often a timer was applied.
COUNTING = {"t_count": {"after": ["never"], "andEvery": "tick", "run": DEV}}
KINDS = ["redis", "database", "locmem", "custom"]


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def make_storage(request: pytest.FixtureRequest, settings: Any) -> Callable[[str], Any]:
    """A factory of storages of the test's kind whose due index holds only
    this test's timers."""
    kind = request.param if hasattr(request, "param") else "redis"
    if kind == "redis":
        alias = request.getfixturevalue("timer_cache")
        return lambda uid: CacheStorageBackend(uid, cache=alias)
    if kind == "locmem":
        location = f"timers-{uuid.uuid4().hex}"
        settings.CACHES = {
            **settings.CACHES,
            "timers-locmem": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": location,
            },
        }
        return lambda uid: CacheStorageBackend(uid, cache="timers-locmem")
    if kind == "database":
        from triggers.storages.database import DatabaseStorageBackend
        from triggers.timer_models import DueTimer

        DueTimer.objects.using(POSTGRES_ALIAS).all().delete()
        return lambda uid: DatabaseStorageBackend(uid, database=POSTGRES_ALIAS)
    return DictStorage


def _manager(
    make_storage: Callable[[str], Any], config: dict[str, Any] = COUNTING
) -> TriggerManager:
    manager = TriggerManager(make_storage(f"timers-{uuid.uuid4().hex}"))
    manager.update_configuration(config)
    return manager


def _count(manager: TriggerManager) -> int:
    return len(manager.storage.instances)


# -- one session ---------------------------------------------------------------------


@pytest.mark.parametrize("make_storage", KINDS, indirect=True)
def test_a_delayed_fire_is_applied_once_when_due_and_not_before(
    make_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given a fire delayed by an hour
    manager = _manager(make_storage)
    assert manager.fire("tick", {"n": 1}, delay=3600) == []
    # Then it is pending, not applied
    (timer,) = manager.storage.timers
    assert (timer["trigger"], timer["kwargs"]) == ("tick", {"n": 1})
    assert _count(manager) == 0
    # When the sweeper runs before it is due, nothing fires
    assert run_due_timers(manager, 3500) == 0
    assert _count(manager) == 0 and len(manager.storage.timers) == 1
    # When it runs after, it fires once with its kwargs, and the timer is gone
    assert run_due_timers(manager, 3601) == 1
    assert manager.storage.latest_kwargs["tick"] == {"n": 1}
    assert _count(manager) == 1
    assert manager.storage.timers == []
    # And sweeping again fires nothing more
    assert run_due_timers(manager, 7200) == 0
    assert _count(manager) == 1
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_at_and_timedelta_and_due_order(make_storage: Callable[[str], Any], threaded: None) -> None:
    manager = _manager(make_storage)
    base = _now()
    manager.fire("tick", {"n": 2}, at=base + timedelta(minutes=10))
    manager.fire("tick", {"n": 1}, delay=timedelta(minutes=5))
    timers = manager.storage.timers
    assert [t["kwargs"]["n"] for t in timers] == [1, 2]
    assert datetime.fromisoformat(timers[1]["due"]) == base + timedelta(minutes=10)
    # A limit applies the earliest first
    assert fire_due_timers(now=base + timedelta(hours=1), limit=1, storage=manager.storage) == 1
    assert manager.storage.latest_kwargs["tick"] == {"n": 1}
    assert fire_due_timers(now=base + timedelta(hours=1), storage=manager.storage) == 1
    assert manager.storage.latest_kwargs["tick"] == {"n": 2}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delay": -1}, InvalidTriggerError),
        ({"delay": float("nan")}, InvalidTriggerError),
        ({"delay": "60"}, InvalidTriggerTypeError),
        ({"delay": True}, InvalidTriggerTypeError),
        ({"delay": timedelta(seconds=-5)}, InvalidTriggerError),
        ({"at": datetime(2030, 1, 1)}, InvalidTriggerError),  # naive
        ({"at": "2030-01-01T00:00:00Z"}, InvalidTriggerTypeError),
        ({"delay": 5, "at": datetime(2030, 1, 1, tzinfo=UTC)}, InvalidTriggerError),
        ({"delay": 5, "idempotency_key": ""}, InvalidTriggerError),
        ({"delay": 5, "idempotency_key": 42}, InvalidTriggerTypeError),
    ],
)
@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_bad_delays_are_refused_and_store_nothing(
    make_storage: Callable[[str], Any], options: dict[str, Any], error: type[Exception]
) -> None:
    manager = _manager(make_storage)
    with pytest.raises(error) as caught:
        manager.fire("tick", **options)
    assert "tick" in str(caught.value)
    assert isinstance(caught.value, TypeError | ValueError)
    assert manager.storage.timers == []
    assert "tick" not in manager.storage.latest_kwargs
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_a_delayed_fire_into_an_unconfigured_session_is_refused_at_once(
    make_storage: Callable[[str], Any], settings: Any
) -> None:
    from triggers.exceptions import SessionNotConfiguredError

    settings.TRIGGERS = {**settings.TRIGGERS, "ON_UNCONFIGURED": "raise"}
    manager = TriggerManager(make_storage(f"timers-{uuid.uuid4().hex}"))
    with pytest.raises(SessionNotConfiguredError):
        manager.fire("tick", delay=60)
    assert manager.storage.timers == []
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("make_storage", ["redis", "database"], indirect=True)
def test_cancel_timers_removes_that_triggers_timers(
    make_storage: Callable[[str], Any], threaded: None
) -> None:
    manager = _manager(make_storage)
    manager.fire("tick", delay=60)
    manager.fire("tick", delay=120)
    manager.fire("tock", delay=60)
    # When the tick timers are cancelled
    assert manager.cancel_timers("tick") == 2
    assert [t["trigger"] for t in manager.storage.timers] == ["tock"]
    assert manager.cancel_timers("tick") == 0
    # Then only tock fires
    assert run_due_timers(manager, 600) == 1
    assert _count(manager) == 0
    assert "tock" in manager.storage.latest_kwargs
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_a_stale_index_entry_fires_nothing_and_is_dropped(
    make_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given an index entry whose timer the session does not hold (a process
    # died between writing the index and the session's commit)
    manager = _manager(make_storage)
    manager.fire("tick", delay=60)
    index = index_for(manager.storage)
    locator = {"storage": "cache", "options": manager.storage.get_init_kwargs(), "manager": None}
    index.add([DueEntry(manager.storage.uid, "no-such-timer", _now().timestamp(), locator)])
    # When the sweeper runs, only the real timer fires and both entries go
    assert run_due_timers(manager, 61) == 1
    assert _count(manager) == 1
    assert index.count() == 0


def test_timers_and_deadlines_on_a_redis_cluster(
    redis_cluster_url: str, timer_cache: str, settings: Any, threaded: None
) -> None:
    # Given session state on a three-master cluster (the due index's shards
    # are hash-tagged keys of their own, spread over the masters)
    from redis.cluster import RedisCluster

    settings.TRIGGERS = {**settings.TRIGGERS, "REDIS_CLIENT": redis_cluster_url}
    config = {
        **COUNTING,
        "t_wait": {
            "after": ["start", "never"],
            "run": DEV,
            "deadline": {"seconds": 60, "fire": "tick"},
        },
    }
    managers = [
        _manager(lambda uid: CacheStorageBackend(uid, cache=timer_cache), config) for _ in range(6)
    ]
    assert isinstance(managers[0].storage.redis_client, RedisCluster)
    for manager in managers:
        manager.fire("tick", delay=30)
        manager.fire("start")  # t_wait#0 sets its deadline
        assert len(manager.storage.timers) == 2
    # When a sweep runs after both are due, each fires once
    assert run_due_timers(managers[0], 61) == 12
    assert [_count(m) for m in managers] == [3] * 6  # t_count#0, #1 and t_wait#0
    assert index_for(managers[0].storage).count() == 0


class ReminderTest(TriggerManagerTestCaseMixin, unittest.TestCase):
    """The test mixin drives time with ``self.run_due_timers`` (no sleeping)."""

    def setUp(self) -> None:
        self.manager = TriggerManager(DictStorage(f"timers-mixin-{uuid.uuid4().hex}"))
        self.manager.update_configuration(
            {"t_remind": {"after": ["reminderDue"], "unless": ["completed"], "run": PASS}}
        )

    def test_the_reminder_runs_a_week_later(self) -> None:
        self.manager.fire("reminderDue", {"who": "ada"}, delay=timedelta(days=7))
        self.assertInstanceMissing("t_remind#0")
        self.assertEqual(self.run_due_timers(timedelta(days=7, seconds=1)), 1)
        self.assertInstanceFinished("t_remind#0", {"kwargs": {"reminderDue": {"who": "ada"}}})

    def test_no_reminder_once_completed(self) -> None:
        self.manager.fire("reminderDue", delay=timedelta(days=7))
        self.manager.fire("completed")
        self.run_due_timers(timedelta(days=8))
        self.assertInstanceAbandoned("t_remind#0")


# -- many sessions, many sweepers ---------------------------------------------------


def _spawn_sweeper(
    kind: str, option: str, now: datetime, hold: bool = False
) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tests.test_timers", "sweep", kind, option, repr(now.timestamp())]
    if hold:
        args.append("--hold")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd()
    )


def _prefix_of(make_storage: Callable[[str], Any]) -> str:
    from django.conf import settings

    return str(settings.CACHES["timers"]["KEY_PREFIX"])


@pytest.mark.parametrize("make_storage", ["redis", "database"], indirect=True)
def test_racing_sweepers_in_four_processes_apply_each_timer_once(
    make_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    kind = "database" if make_storage(f"probe-{uuid.uuid4().hex}").name == "database" else "redis"
    option = POSTGRES_ALIAS if kind == "database" else _prefix_of(make_storage)
    # Given 40 sessions with a due timer each
    managers = [_manager(make_storage) for _ in range(40)]
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


@pytest.mark.parametrize("make_storage", ["redis", "database"], indirect=True)
def test_a_sweeper_killed_mid_way_loses_nothing_and_repeats_nothing(
    make_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    kind = "database" if make_storage(f"probe-{uuid.uuid4().hex}").name == "database" else "redis"
    option = POSTGRES_ALIAS if kind == "database" else _prefix_of(make_storage)
    managers = [_manager(make_storage) for _ in range(10)]
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


@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_the_celery_task_and_the_command_sweep_the_configured_storage(
    make_storage: Callable[[str], Any], settings: Any, threaded: None
) -> None:
    from django.core.management import call_command

    from triggers.tasks import fire_due_timers_task

    alias = make_storage("probe").cache_name
    settings.TRIGGERS = {**settings.TRIGGERS, "STORAGE_OPTIONS": {"cache": alias}}
    manager = _manager(make_storage)
    manager.fire("tick", delay=0)
    assert fire_due_timers_task.name == "triggers.fire_due_timers"
    assert fire_due_timers_task.run() == 1
    manager.fire("tick", delay=0)
    from io import StringIO

    out = StringIO()
    call_command("triggers_timers", "--json", stdout=out)
    assert '"applied": 1' in out.getvalue()
    assert _count(manager) == 2


@pytest.mark.parametrize("make_storage", ["redis", "locmem"], indirect=True)
def test_triggers_inspect_shows_pending_timers(
    make_storage: Callable[[str], Any], settings: Any
) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    manager = _manager(make_storage)
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
    args = [sys.executable, "-m", "tests.test_timers", "loop", prefix]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize("make_storage", ["redis"], indirect=True)
def test_the_command_loop_fires_timers_as_they_fall_due_until_stopped(
    make_storage: Callable[[str], Any], children: list[subprocess.Popen[str]]
) -> None:
    loop = _loop_process(_prefix_of(make_storage))
    children.append(loop)
    manager = _manager(make_storage)
    manager.fire("tick", delay=0.2)
    wait_for(lambda: _count(manager) == 1, timeout=30, message="the loop fired the timer")
    loop.send_signal(signal.SIGTERM)
    out, err = loop.communicate(timeout=30)
    assert loop.returncode == 0, err
    assert "Applied 1 due timer." in out


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

        timers.apply_timer = apply_then_hold  # type: ignore[assignment]
    now = datetime.fromtimestamp(float(when), tz=UTC)
    print("applied", timers.fire_due_timers(now=now, storage=probe), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
