"""One contract suite for every storage backend (SPEC §7): Django's RedisCache,
django-redis, a LocMem cache (the document tier), the database backend, the
document-tier example of docs/storages.rst (also raced across real
processes) and a custom backend that implements only ``name``,
``_load_from_backend`` and ``_save`` (the original's, process-local).

The tests third-party backends run too (``triggers.testing.contract``) run
on these backends in tests/test_storage_tiers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.contract_backends import (
    DEV,
    PASS,
    REDIS_KINDS,
    STORAGE_KINDS,
    DictStorage,
    RecordingTask,
    make_storage,
    new_uid,
    raw_state,
    settle,
    statuses,
)
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage, IndexedStorage
from triggers.storages.cache import CacheDocumentBackend, CacheStorageBackend
from triggers.storages.document import DocumentStorage
from triggers.storages.redis import RedisStorageBackend
from triggers.testing import FailingTask
from triggers.types import TaskConfig, TaskInstance

pytestmark = pytest.mark.usefixtures("threaded")

ROOT = Path(__file__).resolve().parent.parent
RECORDING = RecordingTask.name

WORKFLOW = {
    "t_first": {"after": ["start"], "run": PASS},
    "t_second": {"after": ["t_first", "more"], "run": PASS, "withParams": {"more": {"s": 1}}},
    "t_every": {"after": ["start"], "andEvery": "tick", "run": DEV},
    "t_cancelled": {"after": ["never"], "unless": ["stop"], "run": DEV},
    "t_fails": {"after": ["start"], "run": FailingTask.name},
}


@pytest.fixture(name="kind", params=STORAGE_KINDS)
def kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="uid")
def uid_fixture() -> str:
    return new_uid("contract")


@pytest.fixture(name="storage")
def storage_fixture(kind: str, uid: str) -> BaseTriggerStorage:
    return make_storage(kind, uid)


@pytest.fixture(name="manager")
def manager_fixture(storage: BaseTriggerStorage) -> TriggerManager:
    return TriggerManager(storage)


def run_workflow(manager: TriggerManager) -> None:
    manager.update_configuration(WORKFLOW)
    manager.fire("stop")
    manager.fire("start", {"n": 1})
    manager.fire("tick", {"t": 1})
    manager.fire("tick", {"t": 2})
    manager.fire("more", {"m": 1})
    settle()


def test_custom_backend_implements_only_the_two_primitives() -> None:
    own = {k for k in vars(DictStorage) if not k.startswith("__")}
    assert own == {"name", "_load_from_backend", "_save"}
    assert issubclass(DictStorage, BaseTriggerStorage)


def test_the_same_workflow_ends_the_same_way(manager: TriggerManager) -> None:
    # Given a workflow with a cascade, andEvery, unless and a failure
    # When its triggers fire and the tasks run
    run_workflow(manager)
    storage = manager.storage
    # Then every backend ends in the same state
    assert statuses(storage) == {
        "t_cancelled#0": "abandoned",
        "t_every#0": "finished",
        "t_every#1": "finished",
        "t_fails#0": "failed",
        "t_first#0": "finished",
        "t_second#0": "finished",
    }
    assert storage["t_second#0"].metadata["result"] == {
        "kwargs": {"t_first": {"kwargs": {"start": {"n": 1}}}, "more": {"m": 1, "s": 1}}
    }
    assert storage["t_fails#0"].metadata["exc_type"] == "builtins.RuntimeError"
    # And repairing the failure works the same way too
    manager.skip_failed_instance("t_fails#0")
    assert storage["t_fails#0"].status == "skipped"


def test_a_fresh_storage_object_sees_the_current_state(kind: str, uid: str) -> None:
    # Given a storage object made before anything happened (as a web request would)
    early = make_storage(kind, uid)
    # When another object configures and fires, and the tasks run
    run_workflow(TriggerManager(make_storage(kind, uid)))
    # Then the early object reads the current state, not a stale copy
    assert early["t_second#0"].status == "finished"
    assert len(early) == 6


def test_inspection_api(manager: TriggerManager) -> None:
    run_workflow(manager)
    storage = manager.storage
    # tasks: TaskConfig per name
    assert sorted(storage.tasks) == sorted(WORKFLOW)
    assert all(isinstance(c, TaskConfig) for c in storage.tasks.values())
    assert storage.tasks["t_second"].with_params == {"more": {"s": 1}}
    # instances: TaskInstance per name; storage[name]; iter gives the
    # TaskInstance objects (as the original's storages page says)
    instances = storage.instances
    assert all(isinstance(i, TaskInstance) for i in instances.values())
    assert all(isinstance(i, TaskInstance) for i in storage)
    assert (
        [i.name for i in storage]
        == list(instances)
        == [
            "t_cancelled#0",
            "t_every#0",
            "t_every#1",
            "t_fails#0",
            "t_first#0",
            "t_second#0",
        ]
    )
    assert storage["t_every#1"].kwargs == {"start": {"n": 1}, "tick": {"t": 2}}
    assert "t_every#1" in storage and "t_every#7" not in storage
    # latest kwargs, also in metadata
    assert storage.latest_kwargs == {
        "stop": {},
        "start": {"n": 1},
        "tick": {"t": 2},
        "more": {"m": 1},
        "t_first": {"kwargs": {"start": {"n": 1}}},
        "t_every": {},
        "t_second": {
            "kwargs": {"t_first": {"kwargs": {"start": {"n": 1}}}, "more": {"m": 1, "s": 1}}
        },
    }
    assert storage.metadata["latest_kwargs"] == storage.latest_kwargs
    # instances_of_task, by name or config
    assert [i.name for i in storage.instances_of_task("t_every")] == ["t_every#0", "t_every#1"]
    assert [i.name for i in storage.instances_of_task(storage.tasks["t_first"])] == ["t_first#0"]
    assert storage.instances_of_task("t_unknown") == []
    # unresolved: the failed instance; t_fails is unresolved because of it
    assert [i.name for i in storage.get_unresolved_instances()] == ["t_fails#0"]
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_fails"]
    assert [i.name for i in storage.get_instances_with_unresolved_logs()] == ["t_fails#0"]


def test_get_unresolved_tasks_includes_tasks_without_instances(manager: TriggerManager) -> None:
    # Given a task that ran, one waiting, and one with no instance yet
    manager.update_configuration(
        {
            "t_done": {"after": ["a"], "run": DEV},
            "t_waiting": {"after": ["a", "b"], "run": DEV},
            "t_none": {"after": ["c"], "run": DEV},
        }
    )
    manager.fire("a")
    settle()
    storage = manager.storage
    # Then the unresolved tasks are the waiting one and the one never started
    assert sorted(t.name for t in storage.get_unresolved_tasks()) == ["t_none", "t_waiting"]
    assert [i.name for i in storage.get_unresolved_instances()] == ["t_waiting#0"]


def test_create_and_clone_instance(manager: TriggerManager) -> None:
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a", {"v": 1})
    storage = manager.storage
    # create_instance stores a new unstarted instance with the next number
    created = storage.create_instance(storage.tasks["t_x"], kwargs={"a": {"v": 9}})
    assert created.name == "t_x#1"
    assert storage["t_x#1"].status == "unstarted"
    assert storage["t_x#1"].kwargs == {"a": {"v": 9}}
    by_name = storage.create_instance("t_x")
    assert by_name.name == "t_x#2"
    with pytest.raises(KeyError, match="t_nope"):
        storage.create_instance("t_nope")
    # clone_instance copies kwargs one level deeper
    clone = storage.clone_instance("t_x#0")
    assert clone.name == "t_x#3"
    stored = storage["t_x#3"]
    assert stored.kwargs == {"a": {"v": 1}}
    assert stored.metadata["parent"] == "t_x#0"
    assert stored.metadata["depth"] == 1
    deeper = storage.clone_instance(stored)
    assert storage[deeper.name].metadata["parent"] == "t_x#3"
    assert storage[deeper.name].metadata["depth"] == 2
    # Created and cloned instances take part in firing like any other
    manager.fire("b")
    settle()
    assert statuses(storage) == {
        "t_x#0": "finished",
        "t_x#1": "finished",
        "t_x#2": "unstarted",  # created without kwargs: still waiting for `a`
        "t_x#3": "finished",
        "t_x#4": "finished",
    }
    assert storage["t_x#1"].metadata["kwargs"] == {"a": {"v": 9}, "b": {}}


def test_debug_repr_is_plain_json(manager: TriggerManager) -> None:
    run_workflow(manager)
    snapshot = manager.storage.debug_repr()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["uid"] == manager.storage.uid
    assert set(snapshot["tasks"]) == set(WORKFLOW)
    assert snapshot["instances"]["t_first#0"]["status"] == "finished"
    assert snapshot["latest_kwargs"]["start"] == {"n": 1}


def test_acquire_lock_shares_the_lock_and_writes_at_exit(kind: str, uid: str) -> None:
    # Given a configured session
    manager = TriggerManager(make_storage(kind, uid))
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": PASS}})
    other = make_storage(kind, uid)
    # When manager calls run inside acquire_lock()
    with manager.storage.acquire_lock():
        manager.fire("a", {"v": 1})
        manager.fire("b", {"v": 2})
        manager.update_instance_metadata("t_x#0", {"note": "inside"})
        # Then they do not deadlock, see each other's changes, and are not
        # written yet (another object still sees the session as before)
        assert manager.storage["t_x#0"].status == "scheduled"
        assert manager.storage["t_x#0"].metadata["note"] == "inside"
        assert other.instances == {}
    # And everything is written when the block exits (and the task then runs)
    settle()
    inst = other["t_x#0"]
    assert inst.status == "finished"
    assert inst.metadata["note"] == "inside"
    assert inst.metadata["result"] == {"kwargs": {"a": {"v": 1}, "b": {"v": 2}}}


def test_nothing_is_written_when_the_lock_block_raises(kind: str, uid: str) -> None:
    manager = TriggerManager(make_storage(kind, uid))
    manager.update_configuration({"t_x": {"after": ["a", "b"], "run": DEV}})
    before = raw_state(manager.storage)
    with pytest.raises(RuntimeError):
        with manager.storage.acquire_lock():
            manager.fire("a")
            raise RuntimeError("changed my mind")
    assert raw_state(manager.storage) == before
    # And the lock was released: the session works afterwards
    manager.fire("a")
    assert [i.name for i in manager.storage] == ["t_x#0"]


def test_state_is_stored_as_json(kind: str, manager: TriggerManager) -> None:
    run_workflow(manager)
    raw = raw_state(manager.storage)
    if kind not in REDIS_KINDS:
        assert isinstance(raw, str)
        json.loads(raw)
        return
    # The session's state documents (lock and commit tokens are plain strings)
    by_part = {key.rsplit(b":", 1)[1].decode(): value for key, value in raw.items()}
    for part in ("config", "index", "instances", "counters", "kwargs"):
        for _, value in by_part[part]:
            json.loads(value)  # raises if pickled or otherwise not JSON
    json.loads(by_part["meta"])


# -- Redis expiry ---------------------------------------------------------------


def session_ttls(storage: CacheStorageBackend) -> dict[bytes, int]:
    from tests.contract_backends import redis_cache_client

    client = redis_cache_client()
    try:
        return {key: client.pttl(key) for key in raw_state(storage)}
    finally:
        client.close()


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_timeout_none_keeps_the_session_forever(kind: str, uid: str) -> None:
    storage = make_storage(kind, uid, timeout=None)
    manager = TriggerManager(storage)
    manager.update_configuration({"t_x": {"after": ["a"], "run": DEV}})
    manager.fire("a")
    settle()
    assert isinstance(storage, CacheStorageBackend)
    ttls = session_ttls(storage)
    assert ttls and set(ttls.values()) == {-1}


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_default_timeout_is_the_cache_default(kind: str, uid: str) -> None:
    storage = make_storage(kind, uid)
    assert isinstance(storage, CacheStorageBackend)
    assert storage.timeout == storage.cache.default_timeout == 300
    manager = TriggerManager(storage)
    manager.update_configuration({"t_x": {"after": ["a"], "run": DEV}})
    manager.fire("a")
    settle()
    ttls = session_ttls(storage)
    assert ttls
    for key, ttl in ttls.items():
        assert 290_000 < ttl <= 300_000, (key, ttl)


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_explicit_timeout(kind: str, uid: str) -> None:
    storage = make_storage(kind, uid, timeout=60)
    TriggerManager(storage).fire("a")
    assert isinstance(storage, CacheStorageBackend)
    ttls = session_ttls(storage)
    assert ttls and all(50_000 < t <= 60_000 for t in ttls.values())


def test_each_kind_takes_the_code_path_it_stands_for(
    kind: str, storage: BaseTriggerStorage
) -> None:
    from triggers.locking import LocalLock, SessionLock

    lock = storage.make_lock()
    if kind in REDIS_KINDS:
        assert isinstance(storage, CacheStorageBackend) and storage.uses_redis
        assert isinstance(storage, RedisStorageBackend) and isinstance(storage, IndexedStorage)
        assert isinstance(lock, SessionLock)
    elif kind == "database":
        from triggers.storages.database import DatabaseLock

        assert isinstance(lock, DatabaseLock)
    else:
        assert not getattr(storage, "uses_redis", False)
        assert isinstance(lock, LocalLock)
    if kind == "locmem":
        # The document tier: one JSON document, written if its version held.
        assert isinstance(storage, CacheDocumentBackend) and isinstance(storage, DocumentStorage)
        assert not isinstance(storage, IndexedStorage)
