"""Retention: the session index (``triggers.sessions``) on every cache flavour
and ``manage.py triggers_cleanup``, against real Redis (shared server, this
test's own uid prefix) and a private server where a test needs the whole store.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.contract_backends import DICT_DATABASE, DictStorage
from tests.redis_server import RedisUnavailable
from tests.utils import wait_for
from triggers.exceptions import ConfigurationError, LockHeldError
from triggers.runners.threading import ThreadingTaskRunner
from triggers.sessions import SessionSummary, count_sessions, delete_session, list_sessions
from triggers.shortcuts import get_trigger_manager
from triggers.storages import session_index
from triggers.testing import DevNullTask, FailingTask

ROOT = Path(__file__).resolve().parent.parent
DEV = DevNullTask.name
FAIL = FailingTask.name
#: Cache aliases of tests.settings: Django's RedisCache, django-redis, the
#: suite's default (django-redis-cache in that tox env) and a non-Redis cache.
FLAVOURS = ["builtin-redis", "djredis", "default", "locmem"]
REDIS_FLAVOURS = ["builtin-redis", "djredis", "default"]
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A uid prefix of this test's own; its sessions are deleted afterwards."""
    value = f"ret-{uuid.uuid4().hex[:12]}:"
    yield value
    try:
        for summary in list_sessions(prefix=value):
            delete_session(summary.uid)
    except Exception as exc:  # pragma: no cover - cleanup must not hide the failure
        print(f"cleanup of {value} failed: {exc}")


def use(settings: Any, flavour: str, **triggers: Any) -> None:
    """Store sessions on cache alias ``flavour``, kept until deleted (the
    ``prefix`` fixture deletes them); tasks run in threads."""
    options = {"cache": flavour, **triggers.pop("options", {})}
    settings.TRIGGERS = {
        "CACHE": "default",
        "TIMEOUT": None,
        "DEFAULT_RUNNER": "threading",
        "STORAGE_OPTIONS": options,
        **triggers,
    }


@contextmanager
def written_at(when: datetime) -> Iterator[None]:
    """Writes inside the block are recorded as made at ``when``."""
    saved = session_index.time_source
    session_index.time_source = when.timestamp
    try:
        yield
    finally:
        session_index.time_source = saved


def configured(uid: str, tasks: dict[str, Any], *fires: str) -> None:
    manager = get_trigger_manager(uid)
    manager.update_configuration(tasks)
    for trigger in fires:
        manager.fire(trigger)
    ThreadingTaskRunner.join_all()


def resolved(uid: str) -> None:
    configured(uid, {"t_a": {"after": ["a"], "run": DEV}}, "a")


def waiting(uid: str) -> None:
    configured(uid, {"t_a": {"after": ["a", "b"], "run": DEV}}, "a")


def failed(uid: str) -> None:
    configured(uid, {"t_a": {"after": ["a"], "run": FAIL}}, "a")


def uids(summaries: list[SessionSummary]) -> list[str]:
    return [s.uid for s in summaries]


# -- the index ------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sessions_are_listed_newest_activity_first(settings, flavour, prefix, monkeypatch):
    use(settings, flavour)
    # (a prefix search reads activity in slices; make them small)
    monkeypatch.setattr(session_index, "SCORE_BATCH", 2)
    # Given three sessions last written ten minutes apart
    for minutes, name in ((30, "old"), (10, "new"), (20, "mid")):
        with written_at(NOW - timedelta(minutes=minutes)):
            resolved(prefix + name)

    # Then they are listed newest activity first, with when that was
    listed = list_sessions(prefix=prefix)
    assert listed == [
        SessionSummary(prefix + "new", NOW - timedelta(minutes=10)),
        SessionSummary(prefix + "mid", NOW - timedelta(minutes=20)),
        SessionSummary(prefix + "old", NOW - timedelta(minutes=30)),
    ]
    assert all(s.last_activity.tzinfo is UTC for s in listed)
    assert count_sessions(prefix=prefix) == 3
    # ... page by page
    assert uids(list_sessions(prefix=prefix, offset=1, limit=1)) == [prefix + "mid"]
    assert uids(list_sessions(prefix=prefix, offset=2, limit=5)) == [prefix + "old"]
    assert list_sessions(prefix=prefix, offset=3) == []
    # ... and only those idle since before a time
    older = list_sessions(prefix=prefix, older_than=NOW - timedelta(minutes=15))
    assert uids(older) == [prefix + "mid", prefix + "old"]
    # ... while another prefix sees none of them
    assert list_sessions(prefix=prefix + "x") == [] and count_sessions(prefix=prefix + "x") == 0
    # ... and the whole index holds them too
    assert prefix + "new" in uids(list_sessions(older_than=NOW - timedelta(minutes=5)))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_write_is_activity_and_a_read_is_not(settings, flavour, prefix):
    use(settings, flavour)
    with written_at(NOW - timedelta(hours=2)):
        resolved(prefix + "a")
    with written_at(NOW - timedelta(hours=1)):
        waiting(prefix + "b")
    before = list_sessions(prefix=prefix)

    # When both sessions are read (inspected) and nothing is written
    for uid in (prefix + "a", prefix + "b"):
        storage = get_trigger_manager(uid).storage
        assert storage.instances and storage.get_unresolved_tasks() is not None
        with storage.acquire_lock():
            pass
    # Then nothing moved
    assert list_sessions(prefix=prefix) == before

    # When a trigger fires into the older one
    with written_at(NOW):
        get_trigger_manager(prefix + "a").fire("late")
    # Then it is the most recently active
    assert list_sessions(prefix=prefix)[0] == SessionSummary(prefix + "a", NOW)


def test_every_redis_flavour_shares_one_index(settings, prefix):
    # Given sessions written through Django's RedisCache and through django-redis
    use(settings, "builtin-redis")
    resolved(prefix + "one")
    use(settings, "djredis")
    resolved(prefix + "two")
    # Then either cache (same Redis database) lists both
    assert sorted(uids(list_sessions(prefix=prefix))) == [prefix + "one", prefix + "two"]
    use(settings, "builtin-redis")
    assert count_sessions(prefix=prefix) == 2


def _leftover_keys(uid: str) -> list[bytes]:
    client = redis.Redis.from_url(
        f"{django_settings.TRIGGERS_TEST_REDIS_URL}/{django_settings.REDIS_CACHE_DB}"
    )
    try:
        # The lock's release signal expires on its own (python-redis-lock's).
        found = cast(list[bytes], client.keys(f"*{uid}*"))
        return [k for k in found if not k.startswith(b"lock-signal:")]
    finally:
        client.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_delete_session_removes_everything(settings, flavour, prefix):
    use(settings, flavour)
    uid = prefix + "gone"
    resolved(uid)
    waiting(prefix + "kept")

    # When the session is deleted
    assert delete_session(uid) is True
    # Then nothing of it is left, and it is no longer listed
    storage = get_trigger_manager(uid).storage
    assert storage.tasks == {} and storage.instances == {} and storage.latest_kwargs == {}
    if flavour != "locmem":
        assert _leftover_keys(uid) == []
    assert uids(list_sessions(prefix=prefix)) == [prefix + "kept"]
    assert count_sessions(prefix=prefix) == 1
    # ... a second delete finds nothing
    assert delete_session(uid) is False
    # ... and the other session is untouched
    assert get_trigger_manager(prefix + "kept").storage["t_a#0"].status == "unstarted"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_delete_keeps_a_session_written_since_the_cutoff(settings, flavour, prefix):
    use(settings, flavour)
    uid = prefix + "busy"
    with written_at(NOW - timedelta(days=40)):
        resolved(uid)
    cutoff = NOW - timedelta(days=30)
    # Given a write after the cutoff (the session came back to life)
    get_trigger_manager(uid).fire("again")
    # Then a delete limited to sessions idle since the cutoff keeps it
    assert delete_session(uid, idle_before=cutoff) is False
    assert get_trigger_manager(uid).storage["t_a#0"].status == "finished"
    assert uids(list_sessions(prefix=prefix)) == [uid]
    # ... and one with a later cutoff deletes it
    assert delete_session(uid, idle_before=datetime.now(UTC) + timedelta(minutes=1)) is True


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sessions_that_expired_leave_the_index(settings, flavour, prefix):
    # Given sessions that live one second after their last write
    use(settings, flavour, options={"timeout": 1})
    resolved(prefix + "short")
    assert uids(list_sessions(prefix=prefix)) == [prefix + "short"]
    # When their state expires
    storage = get_trigger_manager(prefix + "short").storage
    wait_for(lambda: not storage.tasks, timeout=10, message="the session to expire")
    # Then the index no longer lists or counts them
    assert list_sessions(prefix=prefix) == [] and count_sessions(prefix=prefix) == 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_delete_inside_a_lock_block_is_refused(settings, flavour, prefix):
    use(settings, flavour)
    uid = prefix + "locked"
    resolved(uid)
    storage = get_trigger_manager(uid).storage
    with pytest.raises(LockHeldError, match="call it after the block"):
        with storage.acquire_lock():
            storage.delete()
    assert get_trigger_manager(uid).storage["t_a#0"].status == "finished"


def test_bad_arguments_are_refused_clearly(settings):
    use(settings, "default")
    with pytest.raises(ValueError, match="aware datetime"):
        list_sessions(older_than=datetime.now())
    with pytest.raises(ValueError, match="offset must be a non-negative integer"):
        list_sessions(offset=-1)
    with pytest.raises(ValueError, match="limit must be a non-negative integer"):
        list_sessions(limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix must be a string"):
        count_sessions(prefix=None)  # type: ignore[arg-type]


def test_a_backend_without_an_index_says_so_and_still_deletes(settings):
    # Given a custom backend that implements only the two primitives
    settings.TRIGGERS = {"STORAGE": "tests.contract_backends.DictStorage"}
    uid = f"dict-{uuid.uuid4().hex}"
    manager = get_trigger_manager(uid)
    assert isinstance(manager.storage, DictStorage)
    manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    # Then listing names the backend and what it lacks
    with pytest.raises(ConfigurationError, match="DictStorage cannot list its sessions"):
        list_sessions()
    # ... and so does the cleanup command (exit status 1)
    with pytest.raises(CommandError, match="DictStorage cannot list its sessions") as caught:
        cleanup("--resolved-older-than", "30d")
    assert caught.value.returncode == 1
    # ... but the generic delete() empties the session
    assert delete_session(uid) is True
    assert get_trigger_manager(uid).storage.tasks == {}
    assert delete_session(uid) is False
    DICT_DATABASE.pop(uid, None)


# -- triggers_cleanup -------------------------------------------------------------


def cleanup(*args: str) -> str:
    out = io.StringIO()
    call_command("triggers_cleanup", *args, stdout=out)
    return out.getvalue()


def old_and_new_sessions(prefix: str) -> None:
    """Sessions idle 40 days (resolved, empty, waiting, failed) and one
    resolved session written a day ago."""
    with written_at(NOW - timedelta(days=40)):
        resolved(prefix + "done")
        get_trigger_manager(prefix + "empty").fire("stray")
        waiting(prefix + "waiting")
        failed(prefix + "failed")
    with written_at(NOW - timedelta(days=1)):
        resolved(prefix + "recent")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cleanup_deletes_old_resolved_sessions_then_old_unresolved_ones(settings, flavour, prefix):
    use(settings, flavour)
    old_and_new_sessions(prefix)

    # When the resolved sessions idle for 30 days are cleaned up
    text = cleanup("--resolved-older-than", "30d", "--prefix", prefix)
    # Then the finished and the empty one are gone, and it says so
    day = (NOW - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"Deleted '{prefix}done' (resolved, last written {day})" in text
    assert f"Deleted '{prefix}empty' (resolved, last written {day})" in text
    assert text.splitlines()[-1] == (
        "Deleted 2 sessions: 2 resolved and idle longer than 30d; kept 2 with unresolved work"
    )
    left = sorted(uids(list_sessions(prefix=prefix)))
    assert left == [prefix + s for s in ("failed", "recent", "waiting")]
    assert get_trigger_manager(prefix + "done").storage.tasks == {}

    # When unresolved sessions idle for 35 days go too
    text = cleanup(
        "--resolved-older-than", "30d", "--unresolved-older-than", "35d", "--prefix", prefix
    )
    # Then only the recent one is left
    assert "Deleted 2 sessions: 0 resolved and idle longer than 30d, 2 unresolved" in text
    assert uids(list_sessions(prefix=prefix)) == [prefix + "recent"]
    assert get_trigger_manager(prefix + "recent").storage["t_a#0"].status == "finished"


def test_cleanup_dry_run_deletes_nothing_and_json_lists_it(settings, prefix):
    use(settings, "default")
    old_and_new_sessions(prefix)
    before = list_sessions(prefix=prefix)

    out = io.StringIO()
    call_command(
        "triggers_cleanup",
        "--resolved-older-than=30d",
        "--prefix",
        prefix,
        "--dry-run",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    assert report["dry_run"] is True and report["resolved_older_than"] == "30d"
    assert sorted(d["uid"] for d in report["deleted"]) == [prefix + "done", prefix + "empty"]
    assert {d["reason"] for d in report["deleted"]} == {"resolved"}
    assert sorted(report["kept_unresolved"]) == [prefix + "failed", prefix + "waiting"]
    assert report["failed"] == {}
    # Nothing was deleted
    assert list_sessions(prefix=prefix) == before
    text = cleanup("--resolved-older-than", "30d", "--prefix", prefix, "--dry-run")
    assert f"Would delete '{prefix}done'" in text and "Would delete 2 sessions" in text


def test_cleanup_keeps_a_session_written_while_it_runs(settings, prefix, monkeypatch):
    use(settings, "default")
    with written_at(NOW - timedelta(days=40)):
        resolved(prefix + "revived")
    from triggers.management.commands import triggers_cleanup

    real = triggers_cleanup.Command._resolved

    def resolved_then_written(uid: str) -> bool:
        # Given a web request that fires into the session right after the
        # command found it resolved
        answer = real(uid)
        get_trigger_manager(uid).fire("comeback")
        return answer

    monkeypatch.setattr(triggers_cleanup.Command, "_resolved", staticmethod(resolved_then_written))
    text = cleanup("--resolved-older-than", "30d", "--prefix", prefix)
    # Then the command keeps it and says why
    assert "Deleted 0 sessions" in text and "kept 1 written to meanwhile" in text
    assert "comeback" in get_trigger_manager(prefix + "revived").storage.latest_kwargs


def test_cleanup_reports_a_session_it_could_not_lock_and_goes_on(settings, prefix):
    use(settings, "default", LOCK_TIMEOUT=0.5)
    with written_at(NOW - timedelta(days=40)):
        resolved(prefix + "busy")
        resolved(prefix + "free")
    # Given a process that holds one session's lock for the whole run
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with get_trigger_manager(prefix + "busy").storage.acquire_lock():
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        # When the cleanup runs
        out = io.StringIO()
        with pytest.raises(CommandError) as caught:
            call_command(
                "triggers_cleanup", "--resolved-older-than", "30d", "--prefix", prefix, stdout=out
            )
    finally:
        done.set()
        holder.join()
    # Then it deleted the other one, and exits 1 naming the busy one and why
    assert f"Deleted '{prefix}free'" in out.getvalue()
    assert caught.value.returncode == 1
    assert f"1 session(s) could not be cleaned up:\n  {prefix}busy: " in str(caught.value)
    assert "lock" in str(caught.value).lower()
    assert uids(list_sessions(prefix=prefix)) == [prefix + "busy"]


@pytest.mark.parametrize("age", ["soon", "30x", "-5d", ""])
def test_cleanup_refuses_an_unreadable_age(settings, age):
    use(settings, "default")
    with pytest.raises(CommandError, match="is not an age") as caught:
        cleanup(f"--resolved-older-than={age}")
    assert caught.value.returncode == 2


def test_cleanup_ages_in_every_unit(settings, prefix):
    use(settings, "default")
    with written_at(NOW - timedelta(hours=3)):
        resolved(prefix + "three-hours")
    for age, deleted in (("1w", 0), ("4h", 0), ("200m", 0), ("3600", 1)):
        text = cleanup("--resolved-older-than", age, "--prefix", prefix, "--dry-run")
        assert f"Would delete {deleted} session" in text, (age, text)


def test_manage_py_triggers_cleanup_exit_status(prefix):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))
    command = [sys.executable, "manage.py", "triggers_cleanup", "--prefix", prefix]
    ok = subprocess.run(
        [*command, "--resolved-older-than", "30d"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("Deleted 0 sessions")
    bad = subprocess.run(
        [*command, "--resolved-older-than", "a month"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--resolved-older-than 'a month' is not an age" in bad.stderr


# -- the whole store, on a Redis server of this module's own ------------------------


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    from examples.embedded_redis import start_embedded_redis

    try:
        server = start_embedded_redis(prefix="triggers-retention-")
    except RedisUnavailable as exc:  # pragma: no cover - make test installs one
        pytest.fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture
def private_store(private_redis: str) -> str:
    """The private server, emptied (it is this module's alone)."""
    client = redis.Redis.from_url(f"{private_redis}/0")
    client.flushdb()
    client.close()
    return private_redis


def cache_on(url: str) -> dict[str, Any]:
    """The suite's default cache flavour, pointed at ``url``."""
    config = dict(django_settings.CACHES["default"])
    if config["BACKEND"] == "redis_cache.RedisCache":
        config["LOCATION"] = url.removeprefix("redis://")
        config["OPTIONS"] = {"DB": 0}
    else:
        config["LOCATION"] = f"{url}/0"
    return config


def test_cleanup_without_a_prefix_covers_the_whole_store(settings, private_store):
    settings.CACHES = {**django_settings.CACHES, "default": cache_on(private_store)}
    use(settings, "default")
    old_and_new_sessions("")
    assert count_sessions() == 5

    text = cleanup("--resolved-older-than", "30d", "--unresolved-older-than", "30d")

    assert text.splitlines()[-1].startswith("Deleted 4 sessions: 2 resolved")
    assert uids(list_sessions()) == ["recent"] and count_sessions() == 1
    client = redis.Redis.from_url(f"{private_store}/0")
    keys = {k for k in cast(list[bytes], client.keys("*")) if not k.startswith(b"lock-signal:")}
    client.close()
    assert keys and all(b"recent" in k or b"{sessions" in k for k in keys), keys


def test_the_docs_beat_example_cleans_up_the_store(settings, private_store, monkeypatch):
    # Given the Celery beat example of docs/retention.rst, on a store of its own
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    import retention  # type: ignore[import-not-found]

    settings.CACHES = {**django_settings.CACHES, "default": cache_on(private_store)}
    use(settings, "default")
    with written_at(NOW - timedelta(days=200)):
        waiting("abandoned-long-ago")
    with written_at(NOW - timedelta(days=40)):
        resolved("finished-last-month")
        waiting("still-waiting")
    # The schedule names the task
    entry = retention.CELERY_BEAT_SCHEDULE["triggers-cleanup"]
    assert entry["task"] == retention.cleanup_sessions.name
    # When beat's task runs
    retention.cleanup_sessions.run()
    # Then the finished month-old session and the half-year-old one are gone
    assert uids(list_sessions()) == ["still-waiting"]


def test_every_storage_check_is_documented():
    ids = set(
        re.findall(r"triggers\.W\d{3}", (ROOT / "triggers" / "checks_storage.py").read_text())
    )
    assert ids and not sorted(
        i for i in ids if i not in (ROOT / "docs" / "retention.rst").read_text()
    )
