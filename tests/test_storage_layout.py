"""How the indexed backends lay a session out (issue 11): one hash slot per
Redis session, fires that read and write only what their trigger needs
whatever the width of a task, and idempotency keys that do not pile up."""

from __future__ import annotations

import time

import pytest

from tests.contract_backends import DEV, REDIS_KINDS, make_storage, new_uid, redis_cache_client
from triggers.manager import TriggerManager
from triggers.storages.data import FetchRequest

pytestmark = pytest.mark.usefixtures("threaded")

WIDE = [f"w{i:03}" for i in range(30)]


def _slot_tag(key: bytes) -> bytes:
    start = key.index(b"{")
    return key[start + 1 : key.index(b"}", start)]


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_every_key_of_a_session_shares_its_hash_tag(kind: str) -> None:
    # Given a session with instances, a lease-free history, a timer and a key
    uid = new_uid("layout")
    manager = TriggerManager(make_storage(kind, uid))
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a", {"n": 1})
    storage = manager.storage
    with storage.transaction() as txn:
        txn.fetch()
        txn.changes.timers_add["tm-1"] = {"trigger": "b", "due": "2030-01-01T00:00:00+00:00"}
        txn.changes.idempotency = ("order-1", time.time() + 60)
    # When its keys are listed (lock and signal names included)
    client = redis_cache_client()
    try:
        keys = list(client.scan_iter(match=f"*{{{len(uid)}:{uid}}}*"))
    finally:
        client.close()
    lock = storage.make_lock()
    # Then every one of them, and the lock's, carries the session's tag
    tag = f"{len(uid)}:{uid}".encode()
    suffixes = {k.rsplit(b":", 1)[1] for k in keys}
    assert {b"config", b"instances", b"received", b"timers", b"idem"} <= suffixes
    assert {_slot_tag(k) for k in keys} == {tag}
    assert _slot_tag(lock.key.encode()) == _slot_tag(lock.signal_key.encode()) == tag


@pytest.mark.parametrize("kind", [*REDIS_KINDS, "database"])
def test_a_fire_reads_a_wide_instance_without_what_it_received(kind: str) -> None:
    # Given a task waiting on 30 triggers, 10 of which fired
    manager = TriggerManager(make_storage(kind, new_uid("wide")))
    manager.update_configuration({"t_wide": {"after": WIDE, "run": DEV}})
    for n, name in enumerate(WIDE[:10]):
        manager.fire(name, {"n": n})
    # When a fire's read is made for the next trigger
    snap = manager.storage.fetch(FetchRequest(triggers=(WIDE[10],)))
    # Then it holds the waiting instance's record without the kwargs it
    # received, and no other trigger's latest kwargs
    record = snap.records["t_wide#0"]
    assert "kwargs" not in record
    assert record["progress"]["after"] == len(WIDE) - 10
    assert set(snap.latest_kwargs) <= {WIDE[10]}
    # And an instance asked for by name comes whole
    named = manager.storage.fetch(FetchRequest(instances=("t_wide#0",)))
    assert named.records["t_wide#0"]["kwargs"] == {w: {"n": n} for n, w in enumerate(WIDE[:10])}


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_expired_idempotency_keys_are_dropped_when_a_new_one_is_recorded(kind: str) -> None:
    storage = make_storage(kind, new_uid("idem"))
    for n in range(5):
        with storage.transaction() as txn:
            txn.fetch()
            txn.changes.idempotency = (f"old-{n}", time.time() - 1)
    with storage.transaction() as txn:
        txn.fetch()
        txn.changes.idempotency = ("new", time.time() + 60)
    client = redis_cache_client()
    try:
        (key,) = client.scan_iter(match=f"*{{{len(storage.uid)}:{storage.uid}}}:idem")
        assert client.zrange(key, 0, -1) == [b"new"]
    finally:
        client.close()
