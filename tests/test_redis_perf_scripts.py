"""The Redis scripts' cheaper paths keep their promises: every session key
lives ``timeout`` after the last commit (a key written long ago as long as
one written now, and a key a commit creates again gets an expiry), the
recent-commits record stays small, and fetch.lua's flat request and reply
carry what the JSON ones did."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract_backends import DEV, REDIS_KINDS, make_storage, new_uid, redis_cache_client
from triggers.manager import TriggerManager
from triggers.storages.data import FetchRequest
from triggers.storages.redis import session_base
from triggers.storages.redis_codec import decode_fetch, encode_request

pytestmark = pytest.mark.usefixtures("threaded")


@pytest.fixture
def client() -> Iterator[Any]:
    c = redis_cache_client()
    try:
        yield c
    finally:
        c.close()


def session_pttls(client: Any, storage: Any) -> dict[bytes, int]:
    """Milliseconds each state key of the session has left: lock keys and
    worker leases aside, which expire on their own clocks (a lease may even
    be gone by the time it is looked at, when the task it guards ends)."""
    base = session_base(storage.cache.make_key, storage.uid)
    pattern = base.replace("{", "[{]").replace("}", "[}]") + "*"
    return {
        k: client.pttl(k)
        for k in client.scan_iter(match=pattern)
        if b":lock" not in k and b":lease:" not in k
    }


def assert_live_for(client: Any, storage: Any, timeout_ms: int, since: float) -> dict[bytes, int]:
    """Every key expires ``timeout_ms`` after a commit that started at
    ``since`` (time.monotonic()); returns the keys' time left."""
    ttls = session_pttls(client, storage)
    elapsed_ms = (time.monotonic() - since) * 1000
    assert ttls
    for key, left in ttls.items():
        assert left > 0, (key, left)
        assert left >= timeout_ms - elapsed_ms - 1, (key, left, elapsed_ms)
        assert left <= timeout_ms, (key, left)
    return ttls


def test_a_key_written_long_ago_lives_as_long_as_one_written_now(client: Any) -> None:
    # Given a session whose keys live 16 s, configured and fired once
    storage = make_storage(REDIS_KINDS[0], new_uid("renewed"), timeout=16)
    manager = TriggerManager(storage)
    manager.update_configuration({"t": {"after": ["a", "b", "c"], "run": DEV}})
    started = time.monotonic()
    manager.fire("a")
    ttls = assert_live_for(client, storage, 16_000, started)
    config = next(k for k in ttls if k.endswith(b":config"))
    # When the configuration's time is running out (as if written long ago)
    # and another trigger fires, writing some keys only
    client.pexpire(config, 5_000)
    started = time.monotonic()
    manager.fire("b")
    # Then every key lives 16 s from that commit, the configuration (written
    # before both fires) too
    ttls = assert_live_for(client, storage, 16_000, started)
    assert ttls[config] > 16_000 - (time.monotonic() - started) * 1000 - 1


@pytest.mark.parametrize("what", ["waiting", "received", "idempotency"])
def test_a_key_emptied_and_written_again_keeps_an_expiry(client: Any, what: str) -> None:
    # Given a session whose keys expire, just written
    storage = make_storage(REDIS_KINDS[0], new_uid("recreate"), timeout=600)
    with storage.transaction() as txn:
        txn.fetch()
        txn.changes.waiting_add = {("t", "a", "t#0")}
        txn.changes.received = {"t#0": {"a": {"n": 1}}}
        txn.changes.idempotency = ("old", time.time() - 1)
        txn.changes.meta = {"configured": False}
    started = time.monotonic()
    assert_live_for(client, storage, 600_000, started)
    # When the next commit empties one of its keys and
    # writes it again in the same script
    with storage.transaction() as txn:
        txn.fetch()
        if what == "waiting":
            txn.changes.waiting_remove = {("t", "a", "t#0")}
            txn.changes.waiting_add = {("t", "a", "t#1")}
        elif what == "received":
            txn.changes.received_drop = {"t#0": {"a"}}
            txn.changes.received = {"t#1": {"a": {"n": 2}}}
        else:
            txn.changes.idempotency = ("new", time.time() + 60)
        txn.changes.meta = {"configured": False, "n": 2}
        started = time.monotonic()
    # Then the key it created again has an expiry like the others
    assert_live_for(client, storage, 600_000, started)


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_a_changed_timeout_applies_to_every_key_at_the_next_commit(client: Any, kind: str) -> None:
    uid = new_uid("retimed")
    config = {"t": {"after": ["a", "b", "c", "d"], "run": DEV}}
    TriggerManager(make_storage(kind, uid, timeout=600)).update_configuration(config)
    TriggerManager(make_storage(kind, uid, timeout=600)).fire("a")
    # A session kept forever: no key expires
    storage = make_storage(kind, uid, timeout=None)
    TriggerManager(storage).fire("b")
    assert set(session_pttls(client, storage).values()) == {-1}
    # A timeout again: every key expires
    storage = make_storage(kind, uid, timeout=600)
    started = time.monotonic()
    TriggerManager(storage).fire("c")
    assert_live_for(client, storage, 600_000, started)
    # A shorter timeout: no key lives longer than it
    storage = make_storage(kind, uid, timeout=60)
    started = time.monotonic()
    TriggerManager(storage).fire("d")
    assert_live_for(client, storage, 60_000, started)


def test_the_recent_commits_record_stays_within_1kb(client: Any) -> None:
    storage = make_storage(REDIS_KINDS[0], new_uid("record"), timeout=600)
    manager = TriggerManager(storage)
    manager.update_configuration({"t": {"after": ["a", "b"], "run": DEV}})
    sizes = []
    for n in range(100):
        manager.fire("a", {"n": n})
        sizes.append(client.strlen(f"{storage._base}:commits"))
    assert max(sizes) <= 1024
    assert min(sizes[60:]) >= 768 - 64  # (cut after the first token past 768 bytes)


# -- fetch.lua's request and reply ------------------------------------------------


def test_a_fires_request_is_the_trigger_name_alone() -> None:
    assert encode_request(FetchRequest(triggers=("go",))) == ("go", ())


def test_a_request_holds_four_lists_and_names_its_instances() -> None:
    request = FetchRequest(triggers=("a", "b"), tasks=("t",), instances=("t#0", "t#1"))
    assert encode_request(request) == ("a\x1fb\x1et\x1et#0\x1ft#1\x1e", ("t#0", "t#1"))


def test_a_name_holding_a_separator_is_left_out_of_a_request() -> None:
    # (Names are validated: such a name cannot be stored, so it reads as absent.)
    request = FetchRequest(triggers=("a\x1fb",), instances=("t#0", "x\x1ey"))
    assert encode_request(request) == ("\x1e\x1et#0\x1e", ("t#0",))


def test_the_flat_reply_decodes_into_a_snapshot() -> None:
    US = "\x1f"
    # fmt: off
    reply = US.join(
        [
            '{"configured":true}',
            "1", "a", '["t"]',  # index
            "1", "t", '{"after":["a","b"],"unless":["x"],"run":"r"}', "2",  # tasks
            "1", "t", "a", "2", "t#0", "t#1",  # waiting
            "2",  # instances
            "t#0", '{"task":"t","progress":{"after":1}}', "2", "b", '{"n":1}', "\x1ex", "null",
            "t#1", "", "",
            "2", "a", '{"k":1}', "b", "",  # kwargs
            "1", "t#0", "1500",  # leases
            "1", "tm", '{"trigger":"a"}',  # timers
            "1",  # idempotency seen
            "110101",
        ]
    ).encode()
    # fmt: on
    snap, found = decode_fetch(reply)
    assert snap.meta == {"configured": True}
    assert snap.index == {"a": ["t"]}
    assert set(snap.configs) == {"t"} and snap.counters == {"t": 2}
    assert snap.waiting == {("t", "a"): ["t#0", "t#1"]}
    assert snap.records == {
        "t#0": {
            "task": "t",
            "progress": {"after": 1},
            "kwargs": {"b": {"n": 1}},
            "abandon_state": {"x": None},
        }
    }
    assert snap.latest_kwargs == {"a": {"k": 1}} and snap.kwargs_known == {"a", "b"}
    assert snap.leases == {"t#0": 1500}
    assert snap.timers == {"tm": {"trigger": "a"}}
    assert snap.idempotency_seen is True
    assert found == {"config", "index", "counters", "waiting"}
