"""Idempotency keys (SPEC §14): a second fire with the same key in the same
session within ``TRIGGERS['IDEMPOTENCY_WINDOW']`` changes nothing and
returns ``[]``; the key is checked and recorded in the fire's own locked
transaction, so racing duplicates (a webhook delivered twice at once) apply
once. On Redis, PostgreSQL, a plain cache and a custom backend."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.contract_backends import DEV, POSTGRES_ALIAS, DictStorage, raw_state
from triggers.exceptions import ConfigurationError, InvalidTriggerError, InvalidTriggerTypeError
from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend

COUNTING = {"t_count": {"after": ["never"], "andEvery": "paid", "run": DEV}}
READY = {"t_ship": {"after": ["paid"], "run": DEV}}
KINDS = ["redis", "database", "locmem", "custom"]


@pytest.fixture
def new_manager(request: pytest.FixtureRequest) -> Any:
    kind = request.param

    def build(config: dict[str, Any] = COUNTING) -> TriggerManager:
        uid = f"idem-{uuid.uuid4().hex}"
        if kind == "redis":
            storage: Any = CacheStorageBackend(uid)
        elif kind == "locmem":
            storage = CacheStorageBackend(uid, cache="locmem")
        elif kind == "database":
            from triggers.storages.database import DatabaseStorageBackend

            storage = DatabaseStorageBackend(uid, database=POSTGRES_ALIAS)
        else:
            storage = DictStorage(uid)
        manager = TriggerManager(storage)
        manager.update_configuration(config)
        return manager

    return build


def _state(manager: TriggerManager) -> Any:
    """What the backend holds for the session (on Redis without the lock's
    bookkeeping of recent commits, which a read-only operation also touches)."""
    if isinstance(manager.storage, DictStorage):
        return None
    state = raw_state(manager.storage)
    if isinstance(state, dict):
        return {k: v for k, v in state.items() if not k.endswith(b":commits")}
    return state


@pytest.mark.parametrize("new_manager", KINDS, indirect=True)
def test_a_repeated_key_changes_nothing(new_manager: Any, threaded: None) -> None:
    # Given a fire with a key that scheduled a task
    manager = new_manager(READY)
    first = manager.fire("paid", {"order": 1}, idempotency_key="evt_1")
    assert [i.name for i in first] == ["t_ship#0"]
    ThreadingTaskRunner.join_all(30)  # the task ran: the session is settled
    before = _state(manager)
    # When the same key comes again, even with other kwargs
    assert manager.fire("paid", {"order": 2}, idempotency_key="evt_1") == []
    # Then nothing changed
    assert manager.storage.latest_kwargs["paid"] == {"order": 1}
    assert _state(manager) == before


@pytest.mark.parametrize("new_manager", KINDS, indirect=True)
def test_other_keys_and_other_sessions_apply(new_manager: Any) -> None:
    manager, other = new_manager(), new_manager()
    manager.fire("paid", idempotency_key="evt_1")
    manager.fire("paid", idempotency_key="evt_2")
    manager.fire("paid")  # no key: always applied
    other.fire("paid", idempotency_key="evt_1")
    assert len(manager.storage.instances) == 3
    assert len(other.storage.instances) == 1


@pytest.mark.parametrize("new_manager", ["redis", "database", "locmem"], indirect=True)
def test_a_key_past_its_window_applies_again(new_manager: Any, settings: Any) -> None:
    # Given keys remembered for no time at all
    settings.TRIGGERS = {**settings.TRIGGERS, "IDEMPOTENCY_WINDOW": 0}
    manager = new_manager()
    manager.fire("paid", idempotency_key="evt_1")
    # Then the key has expired by the next fire
    manager.fire("paid", idempotency_key="evt_1")
    assert len(manager.storage.instances) == 2


@pytest.mark.parametrize("new_manager", KINDS, indirect=True)
def test_past_idempotency_max_keys_the_oldest_key_applies_again(
    new_manager: Any, settings: Any
) -> None:
    # Given a session that keeps at most two keys, and three events
    settings.TRIGGERS = {**settings.TRIGGERS, "IDEMPOTENCY_MAX_KEYS": 2}
    manager = new_manager()
    for key in ("evt_1", "evt_2", "evt_3"):
        manager.fire("paid", idempotency_key=key)
    # When the two newest come again, nothing changes; the oldest, dropped
    # to make room, applies again (the documented limit of the cap)
    manager.fire("paid", idempotency_key="evt_3")
    manager.fire("paid", idempotency_key="evt_2")
    assert len(manager.storage.instances) == 3
    manager.fire("paid", idempotency_key="evt_1")
    assert len(manager.storage.instances) == 4


@pytest.mark.parametrize("bad", [0, -1, "10", 2.5, True])
def test_a_bad_idempotency_max_keys_is_refused_before_the_fire(bad: Any, settings: Any) -> None:
    manager = TriggerManager(CacheStorageBackend(f"idem-{uuid.uuid4().hex}"))
    manager.update_configuration(COUNTING)
    settings.TRIGGERS = {**settings.TRIGGERS, "IDEMPOTENCY_MAX_KEYS": bad}
    with pytest.raises(ConfigurationError, match="IDEMPOTENCY_MAX_KEYS"):
        manager.fire("paid", idempotency_key="evt_1")
    assert manager.storage.instances == {}


@pytest.mark.parametrize("new_manager", ["redis", "database"], indirect=True)
def test_racing_duplicates_apply_once(new_manager: Any) -> None:
    # Given the same webhook delivered eight times at once
    manager = new_manager()
    clone = type(manager)
    start = threading.Barrier(8)
    results: list[Any] = []

    def deliver() -> None:
        twin = clone(
            type(manager.storage)(manager.storage.uid, **manager.storage.get_init_kwargs())
        )
        start.wait(timeout=30)
        results.append(twin.fire("paid", idempotency_key="evt_race"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then it was applied once
    assert len(results) == 8
    assert len(manager.storage.instances) == 1


@pytest.mark.parametrize("new_manager", ["redis"], indirect=True)
@pytest.mark.parametrize(
    ("key", "error"),
    [("", InvalidTriggerError), (7, InvalidTriggerTypeError), ("a\x00b", InvalidTriggerError)],
)
def test_bad_keys_are_refused_before_anything_is_stored(
    new_manager: Any, key: Any, error: type[Exception]
) -> None:
    manager = new_manager()
    with pytest.raises(error, match="idempotency key"):
        manager.fire("paid", idempotency_key=key)
    assert "paid" not in manager.storage.latest_kwargs


@pytest.mark.parametrize("new_manager", ["redis", "locmem"], indirect=True)
def test_a_keyed_delayed_fire_sets_one_timer(new_manager: Any) -> None:
    manager = new_manager()
    manager.fire("paid", delay=60, idempotency_key="evt_later")
    manager.fire("paid", delay=60, idempotency_key="evt_later")
    assert len(manager.storage.timers) == 1
