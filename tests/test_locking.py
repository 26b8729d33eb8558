"""Session locks across real processes: short expiry, renewal while held, a
killed holder blocks the session for seconds only, and no deadlock under
contention (python-redis-lock 4 underneath)."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.managers import init_spawned_process, start_together
from tests.tasks import RecordingTask
from tests.utils import wait_for
from triggers import conf
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance

ROOT = Path(__file__).resolve().parent.parent

# A child process: Django set up, a manager on session argv[1], and say()
# to report to the test as one JSON object per line.
CHILD_PRELUDE = """
import json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
manager = TriggerManager(CacheStorageBackend(sys.argv[1]))
def say(**message):
    print(json.dumps(message), flush=True)
"""


def start_child(uid: str, body: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body), uid],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_message(child: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, Any]:
    """The child's next report; fails, with its stderr, if it exits or stays
    silent."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if ready else ""
    if not line:
        exited = child.poll()
        child.kill()
        _, err = child.communicate(timeout=10)
        why = f"exited with {exited}" if exited is not None else f"sent nothing in {timeout}s"
        raise AssertionError(f"child {child.pid} {why}; stderr:\n{err}")
    return json.loads(line)


def lock_holder(redis_client, key: str) -> str | None:
    value = redis_client.get(key)
    return value.decode() if value is not None else None


# -- expiry and renewal -----------------------------------------------------------


def test_a_lock_held_past_its_expiry_is_renewed_and_a_waiting_fire_then_succeeds(
    settings, redis_client, unique_uid, children
):
    # Given locks that expire after 1 s unless renewed, and another process
    # ready to fire into the session
    settings.TRIGGERS = {**settings.TRIGGERS, "LOCK_EXPIRE": 1}
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t_a": {"after": ["ping", "pong"], "run": RecordingTask.name}})
    child = start_child(
        unique_uid,
        """
        say(ready=True)
        sys.stdin.readline()
        started = time.monotonic()
        manager.fire("ping", {"pid": os.getpid()})
        say(waited=time.monotonic() - started)
        """,
    )
    children.append(child)
    assert read_message(child) == {"ready": True}

    # When this process holds the session lock for three expiry periods
    # while the other process tries to fire
    hold = 3.0
    with manager.storage.acquire_lock() as session:
        lock = session.lock  # the block yields the storage; its lock is .lock
        held_since = time.monotonic()
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()

        def still_ours_until_hold_ends() -> bool:
            # Then the lock stays ours (renewed, never older than its expiry)
            # and the other fire cannot get in
            assert lock_holder(redis_client, lock.key) == lock.id
            assert 0 < redis_client.pttl(lock.key) <= 1000
            assert "ping" not in CacheStorageBackend(unique_uid).latest_kwargs
            return time.monotonic() - held_since >= hold

        wait_for(still_ours_until_hold_ends, timeout=hold + 5, interval=0.05)
        released_at = time.monotonic()

    # Then the waiting fire goes through once the lock is released
    report = read_message(child)
    assert time.monotonic() - released_at < 2
    assert report["waited"] >= hold - 0.2
    storage = CacheStorageBackend(unique_uid)
    assert storage.latest_kwargs == {"ping": {"pid": child.pid}}
    assert storage["t_a#0"].kwargs == {"ping": {"pid": child.pid}}
    assert redis_client.exists(lock.key) == 0


def test_a_killed_lock_holder_blocks_the_session_for_seconds_only(
    redis_client, unique_uid, children
):
    # Given the default lock settings, and a process that fired twice and then
    # took the session lock
    assert conf.get("LOCK_EXPIRE") == 4
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {"t_a": {"after": ["first", "second", "third", "never"], "run": RecordingTask.name}}
    )
    child = start_child(
        unique_uid,
        """
        manager.fire("first", {"n": 1})
        manager.fire("second", {"n": 2})
        with manager.storage.acquire_lock() as session:
            lock = session.lock  # the block yields the storage; its lock is .lock
            say(locked=True, key=lock.key, id=lock.id)
            sys.stdin.readline()
        """,
    )
    children.append(child)
    report = read_message(child)
    assert lock_holder(redis_client, report["key"]) == report["id"]

    # When that process is killed while it holds the lock
    child.kill()
    child.wait(timeout=10)
    killed_at = time.monotonic()
    left_ms = redis_client.pttl(report["key"])
    assert 0 < left_ms <= 4000

    # ... and this process fires into the session
    manager.fire("third", {"n": 3})
    blocked_for = time.monotonic() - killed_at

    # Then the fire waited only until the dead holder's lock expired
    print(f"session blocked {blocked_for:.2f}s after the holder was killed (lock had {left_ms} ms)")
    assert left_ms / 1000 - 0.1 <= blocked_for <= 5.5
    # ... and everything the killed process committed before is still there
    storage = CacheStorageBackend(unique_uid)
    expected = {"first": {"n": 1}, "second": {"n": 2}, "third": {"n": 3}}
    assert storage.latest_kwargs == expected
    (inst,) = storage.instances.values()
    assert inst.name == "t_a#0"
    assert inst.status == TaskInstance.STATUS_UNSTARTED
    assert inst.kwargs == expected


def test_a_holder_paused_past_its_lock_expiry_cannot_overwrite_newer_work(
    redis_client, unique_uid, children
):
    # Given a process whose locks expire after 1 s, in the middle of a fire
    # that created t_each#0 but has not been written yet
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {"t_each": {"after": ["tick", "never"], "andEvery": "tick", "run": RecordingTask.name}}
    )
    child = start_child(
        unique_uid,
        """
        from django.conf import settings
        settings.TRIGGERS = {**settings.TRIGGERS, "LOCK_EXPIRE": 1}
        try:
            with manager.storage.acquire_lock() as session:
                lock = session.lock  # the block yields the storage; its lock is .lock
                manager.fire("tick", {"from": "child"})
                say(ready=True, key=lock.key)
                sys.stdin.readline()
        except Exception as exc:
            say(error=type(exc).__name__)
        manager.fire("tick", {"from": "child, again"})
        say(done=True)
        """,
    )
    children.append(child)
    report = read_message(child)

    # When it is paused (SIGSTOP: its renewer thread stops too) until its lock
    # expires, and this process fires meanwhile
    os.kill(child.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not redis_client.exists(report["key"]), timeout=5, message="lock expired")
        manager.fire("tick", {"from": "parent"})
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()

    # Then its stale write is refused (nothing of it lands), and its next
    # fire works on the current state
    assert read_message(child) == {"error": "LockLostError"}
    assert read_message(child) == {"done": True}
    instances = manager.storage.instances
    assert {name: inst.kwargs["tick"] for name, inst in instances.items()} == {
        "t_each#0": {"from": "parent"},
        "t_each#1": {"from": "child, again"},
    }


def test_a_failed_block_whose_lock_was_taken_over_raises_its_own_error_and_logs_the_release(
    redis_client, unique_uid, caplog
):
    # Given a block holding the session lock, whose lock then expires and is
    # taken by another process (its key now holds another token)
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t": {"after": ["go", "later"], "run": RecordingTask.name}})
    with caplog.at_level("WARNING", logger="triggers.manager"):
        try:
            with manager.storage.acquire_lock() as session:
                manager.fire("go")
                key = session.lock.key
                redis_client.set(key, "another-holder", px=5000)
                # When the block fails
                raise KeyError("the block's own error")
        except KeyError as exc:
            raised: BaseException = exc
    # Then the block's error is what the caller sees, nothing was written, the
    # other holder's lock is untouched, and the failed release is on record
    assert raised.args == ("the block's own error",)
    assert manager.storage.instances == {}
    assert redis_client.get(key) == b"another-holder"
    records = [r for r in caplog.records if "could not release the lock" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING"]
    assert unique_uid in records[0].getMessage() and records[0].exc_info is not None


# -- contention ----------------------------------------------------------------------

THREADS = 4
FIRES_PER_THREAD = 25


def _hammer(uid: str, source: str, barrier: Any = None) -> dict[str, Any]:
    """Fire 'hit' from THREADS threads sharing one manager, FIRES_PER_THREAD
    times each, once every process has reached the barrier."""
    manager = TriggerManager(CacheStorageBackend(uid))
    if barrier is None:
        start_together()
    else:
        barrier.wait(timeout=60)
    began = time.time()

    def thread(t: int) -> list[float]:
        latencies = []
        for n in range(FIRES_PER_THREAD):
            before = time.monotonic()
            manager.fire("hit", {"source": source, "thread": t, "n": n})
            latencies.append(time.monotonic() - before)
            # Reads without the lock, in between, must not disturb writers.
            if n % 5 == 0:
                len(manager.storage.instances)
        return latencies

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        latencies = [x for per_thread in pool.map(thread, range(THREADS)) for x in per_thread]
    return {
        "fired": len(latencies),
        "slowest": max(latencies),
        "seconds": time.monotonic() - started,
        "pid": os.getpid(),
        "began": began,
        "ended": time.time(),
    }


def test_threads_and_processes_hammering_one_session_never_deadlock(unique_uid):
    # Given a task that gets a new instance on every 'hit' (and never runs)
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {"t_hit": {"after": ["hit", "never"], "andEvery": "hit", "run": RecordingTask.name}}
    )
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    started = time.monotonic()
    with ProcessPoolExecutor(
        2, mp_context=context, initializer=init_spawned_process, initargs=(barrier,)
    ) as pool:
        # When 2 other processes and this one each fire from 4 threads at once
        remote = [pool.submit(_hammer, unique_uid, f"child{i}") for i in range(2)]
        local = _hammer(unique_uid, "parent", barrier)
        reports = [local] + [future.result(timeout=60) for future in remote]
    elapsed = time.monotonic() - started

    # Then every fire completed within a bounded time ...
    total = 3 * THREADS * FIRES_PER_THREAD
    assert sum(r["fired"] for r in reports) == total
    assert len({r["pid"] for r in reports}) == 3
    assert max(r["began"] for r in reports) < min(r["ended"] for r in reports)
    slowest = max(r["slowest"] for r in reports)
    print(
        f"{total} contended fires in {max(r['seconds'] for r in reports):.2f}s, "
        f"slowest single fire {slowest:.3f}s"
    )
    assert elapsed < 45
    # ... and each made exactly one instance holding its own kwargs
    instances = manager.storage.instances
    assert list(instances) == [f"t_hit#{n}" for n in range(total)]
    received = sorted(
        (i.kwargs["hit"]["source"], i.kwargs["hit"]["thread"], i.kwargs["hit"]["n"])
        for i in instances.values()
    )
    expected = sorted(
        (source, t, n)
        for source in ("parent", "child0", "child1")
        for t in range(THREADS)
        for n in range(FIRES_PER_THREAD)
    )
    assert received == expected


def test_a_fire_waiting_for_the_lock_survives_its_connection_dropping_mid_wait(
    redis_client, unique_uid
):
    import threading

    import psutil

    # Given a fire in another thread waiting for a lock this test holds: it
    # blocks on the release signal over the connection its operation holds
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t_a": {"after": ["ping", "pong"], "run": RecordingTask.name}})
    outcome: dict[str, Any] = {}

    def fire() -> None:
        try:
            waiting = TriggerManager(CacheStorageBackend(unique_uid))
            outcome["fired"] = waiting.fire("ping", {"n": 1})
        except BaseException as exc:  # reported to the test below
            outcome["error"] = exc

    def blocked_clients() -> list[dict[str, Any]]:
        # This process's connections blocked in BLPOP (other processes may
        # use the same server).
        ours = {f"127.0.0.1:{c.laddr.port}" for c in psutil.Process().net_connections("tcp")}
        return [c for c in redis_client.client_list() if c["cmd"] == "blpop" and c["addr"] in ours]

    with manager.storage.acquire_lock() as session:
        waiter = threading.Thread(target=fire)
        waiter.start()
        wait_for(lambda: len(blocked_clients()) == 1, timeout=10, interval=0.01)

        # When that connection is dropped mid-wait
        redis_client.client_kill_filter(_id=blocked_clients()[0]["id"])
        assert "ping" not in CacheStorageBackend(unique_uid).latest_kwargs
        lock_key = session.lock.key

    # Then, once the lock is released, the fire reconnects, takes it and
    # applies exactly once
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert "error" not in outcome, outcome.get("error")
    storage = CacheStorageBackend(unique_uid)
    assert storage.latest_kwargs == {"ping": {"n": 1}}
    assert storage["t_a#0"].kwargs == {"ping": {"n": 1}}
    assert redis_client.exists(lock_key) == 0
