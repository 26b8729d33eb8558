"""Delayed fires (SPEC §14): ``fire(..., delay=/at=)``, ``storage.timers``,
``cancel_timers``, and ``fire_due_timers`` applying each timer exactly once,
with sweepers racing in several processes and a sweeper killed mid-way,
on Redis, PostgreSQL, a plain cache and a custom backend.

Many sessions and sweepers in several processes, a sweeper killed
mid-way and the entry points (Celery task, command) are in
tests/test_timer_sweepers.py.
"""

from __future__ import annotations

import unittest
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contract_backends import DEV, PASS, DictStorage
from triggers.exceptions import InvalidTriggerError, InvalidTriggerTypeError
from triggers.manager import TriggerManager
from triggers.schedule import timer_record
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.due_index import CLAIM_SECONDS, DueEntry, entry_for, index_for
from triggers.testing import TriggerManagerTestCaseMixin, run_due_timers
from triggers.timers import fire_due_timers

#: Each fire of "tick" makes a new instance that never runs ("never" does
#: not fire): counting instances counts how often a timer was applied.
COUNTING = {"t_count": {"after": ["never"], "andEvery": "tick", "run": DEV}}
KINDS = ["redis", "database", "locmem", "custom"]


def _now() -> datetime:
    return datetime.now(UTC)


def _manager(
    timer_storage: Callable[[str], Any], config: dict[str, Any] = COUNTING
) -> TriggerManager:
    manager = TriggerManager(timer_storage(f"timers-{uuid.uuid4().hex}"))
    manager.update_configuration(config)
    return manager


def _count(manager: TriggerManager) -> int:
    return len(manager.storage.instances)


# -- one session ---------------------------------------------------------------------


@pytest.mark.parametrize("timer_storage", KINDS, indirect=True)
def test_a_delayed_fire_is_applied_once_when_due_and_not_before(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given a fire delayed by an hour
    manager = _manager(timer_storage)
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


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_at_and_timedelta_and_due_order(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    manager = _manager(timer_storage)
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
@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_bad_delays_are_refused_and_store_nothing(
    timer_storage: Callable[[str], Any], options: dict[str, Any], error: type[Exception]
) -> None:
    manager = _manager(timer_storage)
    with pytest.raises(error) as caught:
        manager.fire("tick", **options)
    assert "tick" in str(caught.value)
    assert isinstance(caught.value, TypeError | ValueError)
    assert manager.storage.timers == []
    assert "tick" not in manager.storage.latest_kwargs
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"now": datetime(2030, 1, 1)}, ValueError),
        ({"now": "2030-01-01"}, TypeError),
        ({"limit": 0}, ValueError),
        ({"limit": 2.5}, ValueError),
    ],
)
def test_fire_due_timers_refuses_bad_arguments(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        fire_due_timers(**options, storage=DictStorage("timers-args"))


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_a_delayed_fire_into_an_unconfigured_session_is_refused_at_once(
    timer_storage: Callable[[str], Any], settings: Any
) -> None:
    from triggers.exceptions import SessionNotConfiguredError

    settings.TRIGGERS = {**settings.TRIGGERS, "ON_UNCONFIGURED": "raise"}
    manager = TriggerManager(timer_storage(f"timers-{uuid.uuid4().hex}"))
    with pytest.raises(SessionNotConfiguredError):
        manager.fire("tick", delay=60)
    assert manager.storage.timers == []
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("timer_storage", ["redis", "database"], indirect=True)
def test_cancel_timers_removes_that_triggers_timers(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    manager = _manager(timer_storage)
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


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_a_stale_index_entry_fires_nothing_and_is_dropped(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given an index entry whose timer the session does not hold (a process
    # died between writing the index and the session's commit)
    manager = _manager(timer_storage)
    manager.fire("tick", delay=60)
    index = index_for(manager.storage)
    locator = {"storage": "cache", "options": manager.storage.get_init_kwargs(), "manager": None}
    index.add([DueEntry(manager.storage.uid, "no-such-timer", _now().timestamp(), locator)])
    # When the sweeper runs, only the real timer fires and both entries go
    assert run_due_timers(manager, 61) == 1
    assert _count(manager) == 1
    assert index.count() == 0


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_a_due_index_that_fails_after_the_commit_does_not_fail_the_cancel(
    timer_storage: Callable[[str], Any], monkeypatch: Any, caplog: Any, settings: Any
) -> None:
    # Given a timer, and a due index that cannot drop entries just now
    manager = _manager(timer_storage)
    manager.fire("tick", delay=60)
    index_class = type(index_for(manager.storage))

    def refuse(self: Any, pairs: Any) -> None:
        raise ConnectionError("the due index is away")

    monkeypatch.setattr(index_class, "remove", refuse)
    # When the timer is cancelled, the cancel (committed) still says so, and
    # the entry left behind is reported
    assert manager.cancel_timers("tick") == 1
    assert manager.storage.timers == []
    assert "stay in the due index until a sweep drops them" in caplog.text
    # Then, the index back, that entry fires nothing and (once older than a
    # commit can take) goes
    monkeypatch.undo()
    later = _now() + timedelta(hours=1)
    assert fire_due_timers(now=later, storage=manager.storage) == 0
    settings.TRIGGERS = {**settings.TRIGGERS, "LOCK_TIMEOUT": 0, "LOCK_EXPIRE": 0}
    assert fire_due_timers(now=later + timedelta(hours=1), storage=manager.storage) == 0
    assert _count(manager) == 0
    assert index_for(manager.storage).count() == 0


@pytest.mark.parametrize("timer_storage", ["redis", "locmem"], indirect=True)
def test_a_sweep_ahead_of_the_timers_commit_leaves_its_entry_for_later(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given an index entry written a moment ago whose fire has not committed
    # yet (a sweeper in another process may read the session in between)
    manager = _manager(timer_storage)
    storage = manager.storage
    timer = timer_record("tick", _now(), {})
    index_for(storage).add([entry_for(storage, "in-flight", timer)])
    # When a sweep finds the session without the timer
    assert fire_due_timers(now=_now(), storage=storage) == 0
    # Then the entry stays (claimed), and once the fire commits the timer
    # the sweep after the claim applies it
    assert index_for(storage).count() == 1
    with storage.transaction() as txn:
        txn.fetch()
        txn.changes.timers_add["in-flight"] = timer
    later = _now() + timedelta(seconds=CLAIM_SECONDS + 1)
    assert fire_due_timers(now=later, storage=storage) == 1
    assert _count(manager) == 1
    assert index_for(storage).count() == 0


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
    assert isinstance(getattr(managers[0].storage, "redis_client", None), RedisCluster)
    for manager in managers:
        manager.fire("tick", delay=30)
        manager.fire("start")  # t_wait#0 sets its deadline
        assert len(manager.storage.timers) == 2
    # When a sweep runs after both are due, each fires once
    assert run_due_timers(managers[0], 61) == 12
    assert [_count(m) for m in managers] == [3] * 6  # t_count#0, #1 and t_wait#0
    assert index_for(managers[0].storage).count() == 0


@pytest.mark.parametrize("timer_storage", ["redis"], indirect=True)
def test_a_timer_fires_through_the_manager_that_set_it(
    timer_storage: Callable[[str], Any], threaded: None
) -> None:
    # Given a manager subclass the sweeper can rebuild (a module-level class)
    # and one it cannot (defined in this function): its registered ancestor
    class Local(HookedManager):
        pass

    for cls, hooked in ((HookedManager, True), (Local, False)):
        manager = cls(timer_storage(f"timers-{uuid.uuid4().hex}"))
        manager.update_configuration(COUNTING)
        manager.fire("tick", delay=1)
        HookedManager.fired.clear()
        # When the sweeper applies the timer
        run_due_timers(manager, 2)
        # Then it fired once, through HookedManager only where it could
        assert _count(manager) == 1
        assert (HookedManager.fired == ["tick"]) is hooked, cls


class HookedManager(TriggerManager):
    """Records the fires its _post_fire hook saw."""

    fired: list[str] = []

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[Any]) -> None:
        HookedManager.fired.append(trigger_name)


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
