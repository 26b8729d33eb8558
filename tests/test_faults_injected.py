"""Faults injected into a private redis-server (issue 9): paused with
SIGSTOP/SIGCONT, restarted without persistence, keys evicted under
``allkeys-lru``. For each fault: a typed error or a recorded failure, a
WARNING+ log naming the session (and instance), and no stuck instance once
the fault has cleared. The shared Redis on 6379 is never paused or evicted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from tests.fault_tasks import CountingTask
from tests.redis_server import PrivateRedis
from tests.utils import wait_for
from triggers.exceptions import (
    SessionLostError,
    SessionNotConfiguredError,
    SessionTimeoutError,
)
from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance
from triggers.worker import Claim, WorkerProtocol

CACHE_BACKENDS = {
    "django": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
    "django-redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    },
}


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


@pytest.fixture(params=sorted(CACHE_BACKENDS))
def faulty(request: pytest.FixtureRequest, private_redis: PrivateRedis) -> Iterator[PrivateRedis]:
    """The private server behind cache alias ``'faulty'`` (both Redis cache
    backends), with short timeouts so a hung server is noticed in seconds."""
    cache = {**CACHE_BACKENDS[request.param], "LOCATION": f"{private_redis.url}/0"}
    triggers = {
        **settings.TRIGGERS,
        "REDIS_TIMEOUT": 2,
        # A read that timed out may still take the lock once Redis resumes
        # (it was queued): the next operation waits for it to expire.
        "LOCK_TIMEOUT": 10,
        "OPERATION_TIMEOUT": 12,
        "WORKER_RETRIES": 6,
    }
    with override_settings(CACHES={**settings.CACHES, "faulty": cache}, TRIGGERS=triggers):
        yield private_redis
    if private_redis.paused:
        private_redis.resume()
    ThreadingTaskRunner.join_all(timeout=60)


def storage(uid: str) -> CacheStorageBackend:
    return CacheStorageBackend(uid, cache="faulty")


def logged(caplog: pytest.LogCaptureFixture, *words: str, level: int = 30) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and all(w in r.getMessage() for w in words)
    ]


def assert_nothing_stuck(manager: TriggerManager) -> None:
    assert manager.find_stuck_instances(older_than=0) == []


TWO_STEP = {"t_two": {"after": ["a", "b"], "run": CountingTask.name, "using": "threading"}}


# -- pause: a hung Redis --------------------------------------------------------


def test_a_paused_redis_fails_a_fire_within_the_deadline_and_writes_nothing(
    faulty: PrivateRedis, unique_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a session waiting for its second trigger
    manager = TriggerManager(storage(unique_uid))
    manager.update_configuration(TWO_STEP)
    manager.fire("a", {"n": 1})
    before = manager.storage.debug_repr()

    # When Redis hangs (SIGSTOP) while a fire runs
    faulty.pause()
    started = time.monotonic()
    with pytest.raises(SessionTimeoutError) as info:
        manager.fire("b", {"n": 2})
    waited = time.monotonic() - started
    faulty.resume()

    # Then the fire failed with a typed error naming the session, within the
    # socket timeout and operation deadline (plus one retry), not forever
    assert info.value.uid == unique_uid and unique_uid in str(info.value)
    assert waited < 20, f"blocked {waited:.1f}s"
    assert logged(caplog, unique_uid, level=40)
    # ... nothing of it was written, and once Redis is back the fire works
    assert manager.storage.debug_repr() == before
    (scheduled,) = manager.fire("b", {"n": 2})
    assert scheduled.kwargs == {"a": {"n": 1}, "b": {"n": 2}}
    ThreadingTaskRunner.join_all()
    assert manager.storage["t_two#0"].status == TaskInstance.STATUS_FINISHED
    assert_nothing_stuck(manager)


def test_a_claim_that_times_out_is_retried_with_a_warning_then_runs(
    faulty: PrivateRedis, unique_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a manager class defined right here (unregistered), whose task
    # thread finds Redis paused for 8 s when it claims the instance: longer
    # than the client's own retries last with a 1 s socket timeout
    fired = threading.Event()

    class PausingWorker(WorkerProtocol):
        paused_once = False

        def claim(self, name: str, token: str, lease_ms: int) -> Claim:
            if not PausingWorker.paused_once:
                PausingWorker.paused_once = True
                assert fired.wait(30)  # the fire that dispatched it has committed
                faulty.pause()
                faulty.resume_after(8)
            return super().claim(name, token, lease_ms)

    class PausingManager(TriggerManager):
        worker_class = PausingWorker

    with override_settings(TRIGGERS={**settings.TRIGGERS, "REDIS_TIMEOUT": 1}):
        manager = PausingManager(storage(unique_uid))
    manager.update_configuration(TWO_STEP)
    manager.fire("a")
    with caplog.at_level("WARNING"):
        manager.fire("b")
        fired.set()
        ThreadingTaskRunner.join_all(timeout=60)

    # Then the claim was retried (a WARNING naming session and instance) and
    # the instance ran once Redis was back: nothing stuck in 'scheduled'
    assert PausingWorker.paused_once
    assert logged(caplog, "could not claim t_two#0", unique_uid)
    assert manager.storage["t_two#0"].status == TaskInstance.STATUS_FINISHED
    assert_nothing_stuck(manager)


def test_a_failure_between_dispatch_and_task_body_fails_the_instance(
    faulty: PrivateRedis, unique_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a claim that fails with a non-transient error (what copying
    # pathological kwargs did: RecursionError)
    class BrokenClaimWorker(WorkerProtocol):
        def claim(self, name: str, token: str, lease_ms: int) -> Claim:
            raise RecursionError("maximum recursion depth exceeded (injected)")

    class BrokenClaimManager(TriggerManager):
        worker_class = BrokenClaimWorker

    manager = BrokenClaimManager(storage(unique_uid))
    manager.update_configuration(TWO_STEP)
    manager.fire("a")
    manager.fire("b")
    ThreadingTaskRunner.join_all()

    # Then the instance is failed with type, message and traceback, not left
    # 'scheduled' forever, and the failure was logged naming it
    inst = manager.storage["t_two#0"]
    assert inst.status == TaskInstance.STATUS_FAILED
    assert inst.metadata["exc_type"] == "builtins.RecursionError"
    assert "injected" in inst.metadata["exc_message"]
    assert "RecursionError" in inst.metadata["exc_traceback"]
    assert logged(caplog, "t_two#0", unique_uid, "outside its task body", level=40)
    assert_nothing_stuck(manager)
    # ... and it can be replayed like any failed instance
    clone = TriggerManager(manager.storage).replay_failed_instance("t_two#0")
    ThreadingTaskRunner.join_all()
    assert manager.storage[clone.name].status == TaskInstance.STATUS_FINISHED


# -- restart without persistence ---------------------------------------------------


def test_a_redis_restart_is_noticed_by_old_and_new_processes(
    faulty: PrivateRedis, unique_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a configured session with a fired trigger
    manager = TriggerManager(storage(unique_uid))
    manager.update_configuration(TWO_STEP)
    manager.fire("a")

    # When Redis restarts empty
    faulty.restart()

    # Then the storage object that knew the session refuses to start over ...
    with pytest.raises(SessionLostError):
        manager.fire("b")
    # ... a new process warns by default (naming session and trigger) ...
    fresh = TriggerManager(storage(unique_uid))
    with caplog.at_level("WARNING"):
        assert fresh.fire("b") == []
    assert logged(caplog, unique_uid, "'b'", "no configuration")
    # ... or refuses, with ON_UNCONFIGURED='raise'
    other = TriggerManager(storage(unique_uid + "-2"))
    with override_settings(TRIGGERS={**settings.TRIGGERS, "ON_UNCONFIGURED": "raise"}):
        with pytest.raises(SessionNotConfiguredError):
            other.fire("b")
    assert other.storage.debug_repr()["latest_kwargs"] == {}
    assert_nothing_stuck(fresh)


# -- eviction ------------------------------------------------------------------------


def session_key(uid: str, part: str) -> str:
    return f"{storage(uid)._base}:{part}"


def evict_until_gone(
    faulty: PrivateRedis, uid: str, parts: list[str], keep: list[str]
) -> list[str]:
    """Fill the private server under allkeys-lru until every key in
    ``parts`` was evicted. The ``keep`` parts are touched as the filler
    goes in, and the evicted ones left idle first (Redis's LRU clock counts
    whole seconds), so real LRU eviction picks the parts the test names.
    Returns the ``keep`` parts it evicted too (LRU is approximate)."""
    client = faulty.client()
    gone = [session_key(uid, p) for p in parts]
    kept = [session_key(uid, p) for p in keep]
    try:
        wait_for(
            lambda: min(client.object("idletime", k) or 0 for k in gone) >= 2,
            message="the parts to evict have been idle for 2 s",
        )
        kept = [k for k in kept if client.exists(k)]  # an empty waiting index has no key
        client.config_set("maxmemory-samples", 64)
        used = int(client.info("memory")["used_memory"])
        faulty.squeeze(str(used + 512 * 1024))
        filler = "x" * 4096
        deadline = time.monotonic() + 60
        batch = 0
        while client.exists(*gone):
            assert time.monotonic() < deadline, "eviction never reached the session"
            pipe = client.pipeline(transaction=False)
            pipe.touch(*kept)
            for i in range(4):
                pipe.set(f"filler:{uid}:{batch}:{i}", filler)
            pipe.execute()
            batch += 1
        return [k.rpartition(":")[2] for k in kept if not client.exists(k)]
    finally:
        client.config_set("maxmemory", "0")
        for key in client.scan_iter(match=f"filler:{uid}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.mark.parametrize(
    "evicted, config, fires, then",
    [
        # The waiting index: a fire found nobody waiting and returned [].
        ("waiting", TWO_STEP, [("a", {"n": 1})], "b"),
        # The latest kwargs: the next andEvery instance waited for 'a' forever.
        (
            "kwargs",
            {
                "t_each": {
                    "after": ["a"],
                    "andEvery": "tick",
                    "run": CountingTask.name,
                    "using": "threading",
                }
            },
            [("a", {}), ("tick", {"n": 1})],
            "tick",
        ),
    ],
)
def test_evicted_parts_are_named_instead_of_silently_changing_a_fire(
    faulty: PrivateRedis,
    unique_uid: str,
    evicted: str,
    config: dict[str, Any],
    fires: list[tuple[str, dict[str, Any]]],
    then: str,
) -> None:
    parts = ["config", "index", "instances", "counters", "kwargs", "waiting", "meta"]
    for attempt in range(10):
        # Given a session whose parts are all there
        uid = f"{unique_uid}-{attempt}"
        manager = TriggerManager(storage(uid))
        manager.update_configuration(config)
        for trigger, kwargs in fires:
            manager.fire(trigger, kwargs)
        ThreadingTaskRunner.join_all()

        # When real allkeys-lru eviction takes one of them (and only that one:
        # LRU is approximate, so try again with a new session if it took more)
        if not evict_until_gone(faulty, uid, [evicted], [p for p in parts if p != evicted]):
            break
    else:
        pytest.fail(f"eviction never took {evicted!r} alone")

    # Then a new process's fire names the lost part instead of doing the wrong thing
    fresh = TriggerManager(storage(uid))
    with pytest.raises(SessionLostError) as info:
        fresh.fire(then, {"n": 2})
    assert evicted in str(info.value) and uid in str(info.value)
    assert_nothing_stuck(fresh)
