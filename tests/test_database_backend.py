"""The database storage backend on PostgreSQL: configuration errors, what a
fire reads, the row lock (timeouts, a holder killed mid-fire), leases, and a
real Celery worker rebuilding the backend for cascades and retries.

The contract, property and multi-process suites run on it too (the
``database`` kind in tests/contract_backends.py, tests/test_properties.py and
tests/test_concurrency.py)."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext, override_settings

from tests.contract_backends import (
    DEV,
    PASS,
    POSTGRES_ALIAS,
    new_uid,
    raw_database_state,
    settle,
)
from tests.tasks import RecordingTask
from tests.utils import wait_for
from triggers.exceptions import ConfigurationError, LockTimeoutError
from triggers.manager import TriggerManager
from triggers.runners.base import build_message
from triggers.shortcuts import get_trigger_manager
from triggers.storages import storage_backends
from triggers.storages.data import FetchRequest
from triggers.storages.database import DatabaseStorageBackend
from triggers.types import TaskInstance

pytestmark = pytest.mark.postgres


def storage(uid: str | None = None) -> DatabaseStorageBackend:
    return DatabaseStorageBackend(uid or new_uid("db"), database=POSTGRES_ALIAS)


def statuses(manager: TriggerManager) -> dict[str, str]:
    return {name: inst.status for name, inst in manager.storage.instances.items()}


# -- configuration ---------------------------------------------------------------


def test_the_registry_key_and_the_storage_options_setting_pick_the_backend() -> None:
    # Given TRIGGERS['STORAGE'] = 'database' and the alias in STORAGE_OPTIONS
    options = {"STORAGE": "database", "STORAGE_OPTIONS": {"database": POSTGRES_ALIAS}}
    with override_settings(TRIGGERS=options):
        # When a manager is made the usual way
        manager = get_trigger_manager(new_uid("db"))
        # Then it keeps the session in that database, and a worker would
        # rebuild the same backend from the message
        assert isinstance(manager.storage, DatabaseStorageBackend)
        assert manager.storage.database == POSTGRES_ALIAS
        manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
        message = build_message(manager, manager.storage.create_instance("t_a"))
    assert storage_backends.get_class("database") is DatabaseStorageBackend
    assert message["storage"] == "database"
    assert message["storage_kwargs"] == {"database": POSTGRES_ALIAS}


def test_sqlite_is_refused_with_the_fix_named() -> None:
    # Given the suite's default database, which is SQLite
    # When the backend is pointed at it
    with pytest.raises(ConfigurationError) as caught:
        DatabaseStorageBackend(new_uid("db"), database="default")
    # Then the error says why and what to set instead
    message = str(caught.value)
    assert "PostgreSQL" in message and "sqlite" in message
    assert "STORAGE_OPTIONS" in message
    assert caught.value.directive == "STORAGE_OPTIONS"


def test_an_unknown_alias_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'nowhere' is not configured in DATABASES"):
        DatabaseStorageBackend(new_uid("db"), database="nowhere")


# -- what a fire reads ---------------------------------------------------------------


def _shape(sql: str) -> str:
    """A statement without its session id, uid and JSON values (records
    hold timestamps)."""
    sql = re.sub(r"'db-[0-9a-f]{32}'", "<uid>", sql)
    sql = re.sub(r"'[^']*'::jsonb(\[\])?", "<json>", sql)
    return re.sub(r"\b\d+\b", "<n>", sql)


def _fire_queries(manager: TriggerManager, trigger: str) -> list[str]:
    with CaptureQueriesContext(connections[POSTGRES_ALIAS]) as captured:
        manager.fire(trigger)
    return [q["sql"] for q in captured.captured_queries]


def test_a_fire_reads_the_same_rows_however_big_the_session(threaded) -> None:
    # Given two sessions with the same workflow, one with 100 more instances
    # of an unrelated task and 100 more fired triggers
    config = {
        "t_a": {"after": ["a", "b"], "run": DEV},
        "t_other": {"after": ["o"], "andEvery": "o", "run": DEV, "using": "threading"},
    }
    small, big = TriggerManager(storage()), TriggerManager(storage())
    for manager in (small, big):
        manager.update_configuration(config)
        manager.fire("a")
    for n in range(100):
        big.fire("o")
        big.fire(f"noise{n}")
    settle()

    # When the same trigger fires in both
    small_sql = _fire_queries(small, "b")
    big_sql = _fire_queries(big, "b")

    # Then both fires ran the same statements, with the same names in them
    # (only ids and timestamps differ)
    assert [_shape(sql) for sql in small_sql] == [_shape(sql) for sql in big_sql]
    settle()
    assert statuses(small)["t_a#0"] == statuses(big)["t_a#0"] == "finished"


# -- the row lock ---------------------------------------------------------------------


def test_a_held_lock_makes_others_wait_then_time_out(threaded) -> None:
    # Given one thread holding the session's lock
    uid = new_uid("db")
    TriggerManager(storage(uid)).update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with storage(uid).transaction() as txn:
                txn.lock.ensure()
                held.set()
                done.wait(20)
        finally:
            connections[POSTGRES_ALIAS].close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(20)
        # When another fires with a short lock timeout
        with override_settings(TRIGGERS={"LOCK_TIMEOUT": 0.5}):
            with pytest.raises(LockTimeoutError) as caught:
                TriggerManager(storage(uid)).fire("a")
        assert caught.value.uid == uid
        # Then nothing of that fire was written
        assert storage(uid).latest_kwargs == {}
    finally:
        done.set()
        holder.join(20)
    # ... and once the holder is done, the fire goes through
    TriggerManager(storage(uid)).fire("a")
    settle()
    assert statuses(TriggerManager(storage(uid))) == {"t_a#0": "finished"}


def _hold_mid_commit(uid: str, ready: Any) -> None:
    """Child process: fire, write every row of the fire, and stop just before
    COMMIT, holding the session row's lock until killed."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from triggers.runners.base import force_runner
    from triggers.storages.database import DatabaseLock

    force_runner("threading")

    def stall(self: DatabaseLock) -> None:
        ready.set()
        time.sleep(600)

    DatabaseLock.commit = stall  # type: ignore[method-assign]
    TriggerManager(storage(uid)).fire("a", {"from": "killed"})


def test_a_process_killed_mid_fire_leaves_nothing_and_blocks_nobody(threaded) -> None:
    # Given a session, and a process that has written a fire's rows but is
    # killed (SIGKILL) before committing, while holding the row lock
    uid = new_uid("db")
    manager = TriggerManager(storage(uid))
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    before = raw_database_state(manager.storage)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_hold_mid_commit, args=(uid, ready))
    child.start()
    try:
        assert ready.wait(60), "the child never reached its commit"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(20)
    assert child.exitcode == -signal.SIGKILL

    # When the session is used next (with a lock timeout far below any
    # lease or keepalive expiry)
    with override_settings(TRIGGERS={"LOCK_TIMEOUT": 5}):
        assert storage(uid).latest_kwargs == {}
        assert raw_database_state(manager.storage) == before
        manager.fire("a", {"from": "survivor"})
        manager.fire("b")
    settle()

    # Then nothing the dead process wrote shows, and the fires went through
    # at once: PostgreSQL rolled its transaction back when its connection
    # dropped
    assert manager.storage.latest_kwargs["a"] == {"from": "survivor"}
    assert statuses(manager) == {"t_a#0": "finished"}


# -- leases ---------------------------------------------------------------------------


def test_a_lease_is_renewed_by_its_token_only_and_expires(threaded) -> None:
    # Given a running instance whose worker holds a short lease
    manager = TriggerManager(storage())
    manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    manager.storage.create_instance("t_a", status=TaskInstance.STATUS_RUNNING)
    with manager.storage.transaction() as txn:
        txn.fetch(instances=["t_a#0"])
        txn.set_lease("t_a#0", "token-1", 300)

    def lease_left() -> int:
        snap = manager.storage.fetch(FetchRequest(instances=("t_a#0",)))
        return snap.leases.get("t_a#0", 0)

    assert 0 < lease_left() <= 300
    # When someone else tries to renew it, nothing changes; its owner can
    assert manager.storage.renew_lease("t_a#0", "token-2", 60_000) is False
    assert lease_left() <= 300
    assert manager.storage.renew_lease("t_a#0", "token-1", 60_000) is True
    assert 300 < lease_left() <= 60_000
    # Then a lease that is not renewed runs out (a dead worker's claim ends)
    assert manager.storage.renew_lease("t_a#0", "token-1", 1) is True
    wait_for(lambda: lease_left() == 0, timeout=5, message="the lease expired")


# -- a real worker ------------------------------------------------------------------------


def test_a_celery_worker_rebuilds_the_backend_for_cascades_and_retries(
    celery_worker, unique_uid
) -> None:
    # Given a database-backed session with a cascade and a task that retries
    manager = TriggerManager(storage(unique_uid))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": RecordingTask.name},
            "t_second": {"after": ["t_first"], "run": RecordingTask.name},
            "t_retry": {"after": ["retries"], "run": "triggers.testing.SelfRetryingTask"},
        }
    )

    # When the triggers fire and the worker processes run the tasks
    manager.fire("start")
    manager.fire("retries", {"max": 1})

    # Then the cascade ran in the worker, and the retry chain was recorded
    settled = {
        "t_first#0": TaskInstance.STATUS_FINISHED,
        "t_second#0": TaskInstance.STATUS_FINISHED,
        "t_retry#0": TaskInstance.STATUS_REPLAYED,
        "t_retry#1": TaskInstance.STATUS_FAILED,
    }
    wait_for(lambda: statuses(manager) == settled, timeout=30, message=f"settled: {settled}")
    assert manager.storage["t_second#0"].metadata["result"] == {"instance": "t_second#0"}
    clone = manager.storage["t_retry#1"]
    assert clone.metadata["exc_type"] == "triggers.task.MaxRetriesExceeded"
    assert clone.metadata["parent"] == "t_retry#0"
    worker_pids = set(celery_worker.child_pids())
    from tests.managers import read_events, runs_key

    runs = read_events(runs_key(unique_uid))
    assert {r["instance"] for r in runs} == {"t_first#0", "t_second#0"}
    assert {r["pid"] for r in runs} <= worker_pids


def test_the_threading_runner_rebuilds_the_backend_for_cascades(threaded) -> None:
    manager = TriggerManager(storage())
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": PASS},
            "t_b": {"after": ["t_a", "y"], "run": PASS},
            "t_c": {"after": ["t_b"], "run": DEV},
        }
    )
    manager.fire("x", {"n": 1})
    manager.fire("y", {"m": 2})
    settle()
    assert statuses(manager) == {"t_a#0": "finished", "t_b#0": "finished", "t_c#0": "finished"}
    assert manager.storage["t_b#0"].kwargs["y"] == {"m": 2}


def test_delete_removes_every_row_of_the_session(threaded) -> None:
    manager = TriggerManager(storage())
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    assert raw_database_state(manager.storage) is not None
    manager.storage.delete()
    assert raw_database_state(manager.storage) is None
    assert manager.storage.tasks == {} and manager.storage.instances == {}


# -- retention: the session rows are the index ----------------------------------------


def test_sessions_are_listed_newest_first_and_cleaned_up_when_idle(threaded) -> None:
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from triggers import sessions

    # Given three sessions under one prefix: two finished long ago (their
    # last write is moved back in time), one still waiting
    prefix = new_uid("ret")
    config = {"t_a": {"after": ["a"], "run": DEV}, "t_b": {"after": ["b"], "run": DEV}}
    managers = {}
    for name in ("old", "older", "active"):
        managers[name] = TriggerManager(storage(f"{prefix}-{name}"))
        managers[name].update_configuration(config)
        managers[name].fire("a")
        if name != "active":
            managers[name].fire("b")
    settle()
    from triggers.models import Session

    now = timezone.now()
    rows = Session.objects.using(POSTGRES_ALIAS)
    rows.filter(uid=f"{prefix}-old").update(updated_at=now - timedelta(days=40))
    rows.filter(uid=f"{prefix}-older").update(updated_at=now - timedelta(days=50))
    rows.filter(uid=f"{prefix}-active").update(updated_at=now - timedelta(days=45))
    options = {"STORAGE": "database", "STORAGE_OPTIONS": {"database": POSTGRES_ALIAS}}
    with override_settings(TRIGGERS=options):
        # When they are listed, and the resolved ones idle for 30 days go
        listed = [s.uid for s in sessions.list_sessions(prefix=prefix)]
        count = sessions.count_sessions(prefix=prefix)
        assert not sessions.delete_session(f"{prefix}-old", idle_before=now - timedelta(days=41))
        kept = [s.uid for s in sessions.list_sessions(prefix=prefix)]
        call_command("triggers_cleanup", "--resolved-older-than", "30d", verbosity=0)
        left = [s.uid for s in sessions.list_sessions(prefix=prefix)]

    # Then the listing is by last write, newest first, a session written
    # after the cutoff is kept, and cleanup removes only finished idle ones
    assert listed == [f"{prefix}-old", f"{prefix}-active", f"{prefix}-older"]
    assert count == 3
    assert kept == listed
    assert left == [f"{prefix}-active"]
    assert raw_database_state(storage(f"{prefix}-old")) is None
