"""Faults on the Redis Cluster (tests/test_cluster.py's set-up): a slot
that moved to another master, a reply lost on the way back, and a master
that dies (no replicas: failover is out of scope; docs/choosing-storage.rst
says what happens)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from tests import test_properties as properties
from tests.redis_cluster import move_slot, start_cluster
from tests.test_cluster import (  # noqa: F401  (on_cluster: this module's state is on the cluster)
    DEV,
    client_of,
    cluster_storage,
    keys_of,
    on_cluster,
)
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.redis import session_base
from triggers.storages.session_index import RedisSessionIndex


def test_a_session_whose_slot_moved_is_followed_to_its_new_master() -> None:
    # Given a session, and its slot moved to another master behind the
    # client's back (resharding)
    storage = cluster_storage(f"moved-{uuid.uuid4().hex}")
    manager = TriggerManager(storage)
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
    key = keys_of(storage)[0]
    client = client_of(storage)
    old = client.get_node_from_key(key).port
    move_slot(client, key, next(n.port for n in client.get_primaries() if n.port != old))
    # When the same client fires into it (its map of slots is stale)
    with properties.using_runner("threading"):
        manager.fire("a")
        manager.fire("b")
    # Then the commands followed the slot: the task ran, nothing was lost
    assert cluster_storage(storage.uid)["t_a#0"].status == "finished"
    assert client.get_node_from_key(key).port != old


def test_a_lost_reply_is_sent_again_and_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a session whose index shard is on another master than its state
    storage = cluster_storage(f"lost-{uuid.uuid4().hex}")
    client = client_of(storage)
    while True:
        index = RedisSessionIndex(storage.cache, client).keys_of(storage.uid)[0]
        state = session_base(storage.cache.make_key, storage.uid)
        if client.get_node_from_key(index).port != client.get_node_from_key(state).port:
            break
        storage = cluster_storage(f"lost-{uuid.uuid4().hex}")
    manager = TriggerManager(storage)
    manager.update_configuration({"t_each": {"after": ["tick"], "andEvery": "tick", "run": DEV}})
    port = client.get_node_from_key(state).port
    # ... and a connection that loses the reply of the next commit (the
    # script ran, the client sees the connection drop)
    real = AbstractConnection.read_response
    lost: list[Any] = []

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = real(self, *args, **kwargs)
        if not lost and getattr(self, "port", None) == port and isinstance(reply, int):
            lost.append(reply)
            raise RedisConnectionError("connection lost before the reply (test)")
        return reply

    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    # When a trigger fires
    with properties.using_runner("prop-queue"):
        scheduled = manager.fire("tick", {"n": 1})
        properties.QueueRunner.queue.clear()
    # Then the commit was sent again, found already applied, and the fire
    # returned normally: one instance, scheduled once
    assert lost == [0]
    assert [i.name for i in scheduled] == ["t_each#0"]
    monkeypatch.undo()
    fresh = cluster_storage(storage.uid)
    assert list(fresh.instances) == ["t_each#0"]
    assert fresh.latest_kwargs["tick"] == {"n": 1}


# -- a master dies (no replicas: failover is out of scope) ---------------------------


def test_a_dead_master_fails_its_sessions_loudly_and_spares_the_others() -> None:
    # Given a cluster of its own with sessions on every master (each master
    # has run the scripts once)
    cluster = start_cluster()
    try:
        with override_settings(TRIGGERS={**django_settings.TRIGGERS, "REDIS_CLIENT": cluster.url}):
            storages = [cluster_storage(f"dies-{n}-{uuid.uuid4().hex}") for n in range(24)]
            for storage in storages:
                manager = TriggerManager(storage)
                manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
                # (redis-py loads a script on every master when one lacks it,
                # which fails while a master is down)
                manager.fire("warm")
            client = client_of(storages[0])
            index = RedisSessionIndex(storages[0].cache, client)

            def where(storage: CacheStorageBackend) -> tuple[int, int]:
                """The masters of the session's state and of its index shard."""
                state = session_base(storage.cache.make_key, storage.uid)
                shard = index.keys_of(storage.uid)[0]
                return client.get_node_from_key(state).port, client.get_node_from_key(shard).port

            victim = where(storages[0])[0]
            # ... and one listed in an index shard on that master
            while where(storages[-1])[1] != victim:
                storages[-1] = cluster_storage(f"dies-{uuid.uuid4().hex}")
            manager = TriggerManager(storages[-1])
            manager.update_configuration({"t_a": {"after": ["a", "b"], "run": DEV}})
            manager.fire("warm")
            # When that master dies (before the cluster notices: node timeout 5 s)
            process = cluster.processes[cluster.ports.index(victim)]
            process.kill()
            process.wait()
            # Then a fire into one of its sessions raises, at once
            with pytest.raises(RedisConnectionError):
                TriggerManager(cluster_storage(storages[0].uid)).fire("a")
            # ... and so does one whose index shard is there (its write
            # may have been applied, as after a lost reply)
            with pytest.raises(RedisConnectionError):
                TriggerManager(cluster_storage(storages[-1].uid)).fire("a")
            # ... while sessions (and shards) on the other masters still work
            other = next(s for s in storages if victim not in where(s))
            with properties.using_runner("threading"):
                TriggerManager(cluster_storage(other.uid)).fire("a")
            after = cluster_storage(other.uid)
            assert after["t_a#0"].status == "unstarted" and "a" in after.latest_kwargs
    finally:
        cluster.stop()
