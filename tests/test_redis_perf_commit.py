"""The Redis commit's round trip: on a plain client one script writes the
session, releases its lock and updates the session index shard (one command,
one reply); a client whose server refuses keys of several hash slots in one
script (a cluster-enabled server reached by a plain client) falls back to the
separate index update, and the commit is not lost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.contract_backends import DEV, REDIS_KINDS, make_storage, new_uid, redis_cache_client
from triggers.manager import TriggerManager
from triggers.storages import cluster_wire, redis_wire
from triggers.storages.redis import session_base
from triggers.storages.session_index import RedisSessionIndex, shard_keys, shard_of

pytestmark = pytest.mark.usefixtures("threaded")


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[Any, ...]]]:
    """Every batch of commands the storage sends on a direct connection."""
    sent: list[list[tuple[Any, ...]]] = []
    exchange = redis_wire._exchange

    def recording(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        sent.append(list(commands))
        return exchange(conn, commands)

    monkeypatch.setattr(redis_wire, "_exchange", recording)
    return sent


@pytest.mark.redis_py6  # counts the batches of the direct path
@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_a_fire_commits_and_lists_its_session_in_one_script(
    kind: str, batches: list[list[tuple[Any, ...]]]
) -> None:
    # Given a configured session on a plain Redis client
    manager = TriggerManager(make_storage(kind, new_uid("onescript")))
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    storage = manager.storage
    shard = RedisSessionIndex(storage.cache, storage._redis).keys_of(storage.uid)
    client = redis_cache_client()
    try:
        before = client.zscore(shard[0], storage.uid)
        # When a trigger fires
        del batches[:]
        manager.fire("a", {"n": 1})
        after = client.zscore(shard[0], storage.uid)
        names = client.zscore(shard[1], storage.uid)
        expires = client.zscore(shard[2], storage.uid)
    finally:
        client.close()
    # Then it took two single-command round trips (read, then commit) ...
    assert batches  # (both kinds' clients send on a direct connection)
    assert [len(b) for b in batches] == [1, 1]
    commit = batches[1][0]
    assert commit[0] == "EVALSHA"
    assert all(key in commit for key in shard)
    # ... and the commit listed the session as written just now
    assert before is not None and after is not None and after >= before
    assert names == 0
    assert (expires is None) == (storage.timeout is None)
    if storage.timeout is not None:
        assert expires == pytest.approx(after + storage.timeout)


@pytest.mark.redis_py6  # resends a batch of the direct path
def test_a_resent_commit_writes_once_and_keeps_the_index_entry(
    batches: list[list[tuple[Any, ...]]],
) -> None:
    # Given a fire whose commit (with its index update) was sent and applied
    manager = TriggerManager(make_storage(REDIS_KINDS[0], new_uid("resend")))
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    del batches[:]
    manager.fire("a", {"n": 1})
    assert batches, "the builtin Redis cache's client sends on a direct connection"
    commit = batches[-1]
    storage = manager.storage
    client = redis_cache_client()
    try:
        shard = RedisSessionIndex(storage.cache, storage._redis).keys_of(storage.uid)
        listed = client.zscore(shard[0], storage.uid)
        counters = client.hgetall(f"{storage._base}:counters")
        # When the same script is sent again (a lost reply, retried)
        again = client.execute_command(*commit[0])
        # Then it answers success and changes nothing, in the session or the index
        assert again == 0
        assert client.hgetall(f"{storage._base}:counters") == counters
        assert client.zscore(shard[0], storage.uid) == listed
    finally:
        client.close()
    assert [i.name for i in manager.storage.instances.values()] == ["t_a#0"]


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_an_operation_that_writes_nothing_leaves_every_key_expiring(kind: str) -> None:
    # Given a session whose keys expire, and a locked block that only reads
    uid = new_uid("readonly")
    storage = make_storage(kind, uid, timeout=600)
    manager = TriggerManager(storage)
    manager.update_configuration({"t": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a")
    with storage.acquire_lock():
        assert storage["t#0"].status == "unstarted"
    # Then no key of the session was left without an expiry (the commit of
    # the block, which wrote nothing, records nothing that would outlive it)
    client = redis_cache_client()
    base = session_base(storage.cache.make_key, uid)
    keys = list(client.scan_iter(match=base.replace("{", "[{]").replace("}", "[}]") + "*"))
    assert keys
    assert all(0 < client.pttl(key) <= 600_000 for key in keys), {
        key: client.pttl(key) for key in keys
    }


@pytest.fixture
def plain_client_of_a_cluster(redis_cluster_url: str) -> Iterator[tuple[redis.Redis, Any]]:
    """A plain ``redis.Redis`` on one master of the test cluster, and that
    cluster's own client."""
    from redis.cluster import RedisCluster

    cluster = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis"))
    node = cluster.get_primaries()[0]
    plain = redis.Redis(host=node.host, port=node.port)
    try:
        yield plain, cluster
    finally:
        plain.close()
        cluster.close()


def test_a_server_refusing_cross_slot_scripts_gets_the_index_update_apart(
    plain_client_of_a_cluster: tuple[redis.Redis, Any], settings: Any
) -> None:
    # Given a plain client of a cluster master, and a session whose keys
    # that master serves while its index shard is in another slot
    plain, cluster = plain_client_of_a_cluster
    port = plain.connection_pool.connection_kwargs["port"]
    settings.TRIGGERS = {**settings.TRIGGERS, "REDIS_CLIENT": lambda: plain}
    cache = make_storage(REDIS_KINDS[0], new_uid("crossslot")).cache

    def served_here(uid: str) -> bool:
        keys = [session_base(cache.make_key, uid), shard_keys(cache, shard_of(uid))[0]]
        return all(cluster.get_node_from_key(k).port == port for k in keys)

    uid = next(u for u in (new_uid("crossslot") for _ in range(1000)) if served_here(u))
    storage = make_storage(REDIS_KINDS[0], uid)
    assert storage._redis is plain
    assert cluster_wire.spans_slots(plain)
    manager = TriggerManager(storage)
    # When it is configured and fired
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    manager.fire("a", {"n": 1})
    manager.fire("b", {"n": 2})
    # Then the commits went through (the server refused the joined script
    # once, and the client now sends the index update on its own) ...
    assert not cluster_wire.spans_slots(plain)
    assert manager.storage.instances["t_a#0"].status != "unstarted"
    # ... and the session is listed in its index shard
    activity = shard_keys(storage.cache, shard_of(uid))[0]
    assert cluster.zscore(activity, uid) is not None
