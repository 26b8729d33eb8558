"""The connection a thread keeps for its session operations
(``triggers.connections``): one checkout for many fires, given back when the
thread ends, never used by a forked child, never left holding a reply."""

from __future__ import annotations

import gc
import multiprocessing
import threading
from typing import Any

import pytest
import redis

from tests.tasks import RecordingTask
from triggers import connections
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend

# Kept connections are redis-py 6+'s direct path (see triggers.storages.redis_wire).
pytestmark = pytest.mark.redis_py6

CONFIG = {"t": {"after": ["a", "b"], "run": RecordingTask.name}}


def _spy(pool: redis.ConnectionPool, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"get": 0, "release": 0}
    get, release = pool.get_connection, pool.release

    def counted_get(*args: Any, **kwargs: Any) -> Any:
        counts["get"] += 1
        return get(*args, **kwargs)

    def counted_release(conn: Any) -> None:
        counts["release"] += 1
        release(conn)

    monkeypatch.setattr(pool, "get_connection", counted_get)
    monkeypatch.setattr(pool, "release", counted_release)
    return counts


def _storage_pool(uid: str) -> redis.ConnectionPool:
    pool = CacheStorageBackend(uid).redis_client.connection_pool
    assert connections.keeps_connections(pool)
    return pool


def test_a_thread_checks_out_one_connection_for_many_fires(
    unique_uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {f"t{n}": {"after": [f"s{n}", "gate"], "run": RecordingTask.name} for n in range(20)}
    )
    counts = _spy(_storage_pool(unique_uid), monkeypatch)
    connections.give_back_kept_connections()
    for n in range(20):
        TriggerManager(CacheStorageBackend(unique_uid)).fire(f"s{n}", {"n": n})
    assert counts == {"get": 1, "release": 1}  # the one given back above, then one
    assert all(manager.storage[f"t{n}#0"].kwargs == {f"s{n}": {"n": n}} for n in range(20))


def test_a_thread_that_ends_gives_its_connection_back(
    unique_uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    TriggerManager(CacheStorageBackend(unique_uid)).update_configuration(CONFIG)
    calls: list[tuple[str, int, Any]] = []
    get, release = redis.ConnectionPool.get_connection, redis.ConnectionPool.release

    def counted_get(pool: Any, *args: Any, **kwargs: Any) -> Any:
        conn = get(pool, *args, **kwargs)
        calls.append(("get", threading.get_ident(), conn))
        return conn

    def counted_release(pool: Any, conn: Any) -> None:
        calls.append(("release", threading.get_ident(), conn))
        release(pool, conn)

    monkeypatch.setattr(redis.ConnectionPool, "get_connection", counted_get)
    monkeypatch.setattr(redis.ConnectionPool, "release", counted_release)

    def work() -> None:
        for n in range(5):
            TriggerManager(CacheStorageBackend(unique_uid)).fire("a", {"n": n})

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    gc.collect()
    taken = [conn for what, ident, conn in calls if what == "get" and ident == thread.ident]
    given = [conn for what, _, conn in calls if what == "release"]
    assert len(taken) == 1  # five fires, one checkout
    assert given == taken  # back in its pool once the thread ended


def test_an_interrupted_exchange_leaves_no_reply_for_the_next_operation(
    unique_uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({**CONFIG, "u": {"after": ["c"], "run": RecordingTask.name}})
    conn = connections.kept_connection(_storage_pool(unique_uid))
    read = type(conn).read_response
    calls = {"n": 0}

    def interrupted_at_second_reply(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A fire reads one reply for its fetch, then two (the session index's
        # and the commit's): stop after the index's, the commit's still due.
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return read(self, *args, **kwargs)

    monkeypatch.setattr(type(conn), "read_response", interrupted_at_second_reply)
    with pytest.raises(KeyboardInterrupt):
        TriggerManager(CacheStorageBackend(unique_uid)).fire("a", {"n": 1})
    monkeypatch.setattr(type(conn), "read_response", read)
    # Had the socket stayed open, the next fetch would read the commit's
    # reply (an integer) as its own.
    scheduled = TriggerManager(CacheStorageBackend(unique_uid)).fire("c", {"n": 2})
    assert [inst.name for inst in scheduled] == ["u#0"]
    # The interrupted fire's commit was applied by Redis all the same.
    assert manager.storage["t#0"].kwargs == {"a": {"n": 1}}


def test_a_thread_keeps_connections_of_a_few_pools_only() -> None:
    connections.give_back_kept_connections()
    pools = [redis.ConnectionPool(host="127.0.0.1") for _ in range(connections.KEPT_PER_THREAD + 2)]
    kept = [connections.kept_connection(pool) for pool in pools]
    for conn in kept:
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG")
    # The two least recently used went back to their pools.
    for pool, conn in zip(pools[:2], kept[:2], strict=True):
        assert conn in pool._available_connections
    for pool in pools[2:]:
        assert connections.kept_connection(pool) is kept[pools.index(pool)]
    connections.give_back_kept_connections()
    for pool, conn in zip(pools, kept, strict=True):
        assert conn in pool._available_connections
        pool.disconnect()


def _fire_in_child(uid: str, queue: Any) -> None:
    try:
        scheduled = TriggerManager(CacheStorageBackend(uid)).fire("b", {"from": "child"})
        queue.put(sorted(inst.name for inst in scheduled))
    except BaseException as exc:
        queue.put(repr(exc))
        raise


def test_a_forked_child_does_not_use_the_parents_connection(unique_uid: str) -> None:
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CONFIG)
    manager.fire("a", {"n": 0})  # the parent now keeps a connection
    parent_conn = connections.kept_connection(_storage_pool(unique_uid))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_fire_in_child, args=(unique_uid, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0, result
    assert result == ["t#0"]
    # The parent's connection still works and was not used by the child.
    assert connections.kept_connection(_storage_pool(unique_uid)) is parent_conn
    assert manager.fire("a", {"n": 1}) == []
    assert manager.storage["t#0"].kwargs == {"a": {"n": 0}, "b": {"from": "child"}}


def test_a_kept_connection_the_server_closed_is_replaced(
    unique_uid: str, redis_client: redis.Redis
) -> None:
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(CONFIG)
    manager.fire("a", {"n": 0})
    conn = connections.kept_connection(_storage_pool(unique_uid))
    conn.send_command("CLIENT", "ID")
    client_id = conn.read_response()
    # What an idle timeout or a restarted server does to a kept connection.
    assert redis_client.client_kill_filter(_id=client_id) == 1
    scheduled = TriggerManager(CacheStorageBackend(unique_uid)).fire("b", {"n": 1})
    assert [inst.name for inst in scheduled] == ["t#0"]
