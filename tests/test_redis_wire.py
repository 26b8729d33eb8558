"""The Redis protocol text the storage sends: byte for byte what redis-py
itself would send for the same commands, script KEYS included (packed once
per session and reused), and round-tripped through a real server."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from triggers.storages import redis_wire
from triggers.storages.redis_wire import Script, pack

COMMANDS = [
    ("SET", "plain", "value"),
    ("SET", "ünïcode-kéy", "välue ✓", "PX", 1500),
    ("HSET", "h", "field", 3.25, "other", -7, "raw", b"\xff\x00bytes"),
    ("SET", "long", "x" * 5000),
    ("EVALSHA", "0" * 40, 2, "k:{s}:1", "k:{s}:ü", "arg", 1, 0.5, ""),
    ("EVALSHA", "0" * 40, 0, "no-keys"),
    # ASCII arguments after non-ASCII keys (their heads come from the cache)
    ("EVALSHA", "0" * 40, 1, "k:{s}:ü", "plain", 7),
    ("HSET", "wide", *[f"f{i}" for i in range(300)]),  # more than 255 arguments
    ("SET", "bytes-ü", "é" * 1100, b"\xc3\xa9\xff"),  # long and multibyte
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] + "-" + str(c[1])[:8])
def test_each_command_is_packed_as_redis_py_packs_it(command):
    assert pack([command]) == b"".join(Connection().pack_commands([command]))


def test_a_batch_is_the_commands_one_after_another_and_the_same_again_from_the_cache():
    expected = b"".join(Connection().pack_commands(COMMANDS))
    assert pack(COMMANDS) == expected
    assert pack(COMMANDS) == expected  # KEYS now come from the cache


def test_the_cache_of_packed_keys_stays_bounded(monkeypatch):
    monkeypatch.setattr(redis_wire, "_PACKED_KEYS", {})
    monkeypatch.setattr(redis_wire, "_PACKED_KEYS_MAX", 8)
    for n in range(50):
        command = ("EVALSHA", "0" * 40, 1, f"session-{n}:key", "arg")
        assert pack([command]) == b"".join(Connection().pack_commands([command]))
        assert len(redis_wire._PACKED_KEYS) <= 8


def test_a_value_that_cannot_be_sent_is_refused_by_name():
    with pytest.raises(TypeError, match="cannot send list"):
        pack([("SET", "k", ["not", "a", "string"])])


@pytest.mark.redis_py6  # the pool's get_connection() signature of redis-py 6 and later
def test_a_script_call_with_non_ascii_keys_and_args_round_trips_through_redis(redis_client):
    script = Script("renew_lease")  # any shipped script: only the wire is tested here
    key = f"triggers-test:wire:{uuid.uuid4().hex}:ü✓"
    redis_client.set(key, "tökén", px=60_000)
    try:
        conn = redis_client.connection_pool.get_connection()
        try:
            redis_client.script_load(script.source)
            conn.send_packed_command([pack([script.call([key], ["tökén", 90_000])])])
            assert conn.read_response() == 1
        finally:
            redis_client.connection_pool.release(conn)
        assert 60_000 < redis_client.pttl(key) <= 90_000
    finally:
        redis_client.delete(key)


class _FlakyConnection:
    """A connection whose first ``failures`` sends fail, then answers ``OK``
    to each command, with redis-py's retry policy of ``retries``."""

    def __init__(self, failures: int, retries: int) -> None:
        # (redis-py 4 and later: imported here so the module loads on redis-py 3.)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.retry = Retry(NoBackoff(), retries)
        self.failures = failures
        self.sends = 0
        self.disconnects = 0
        self.due = 0

    def send_packed_command(self, packed: list[bytes]) -> None:
        self.sends += 1
        if self.sends <= self.failures:
            raise RedisConnectionError(f"send {self.sends} lost")
        self.due = packed[0].count(b"*")

    def read_response(self) -> str:
        self.due -= 1
        return "OK"

    def disconnect(self) -> None:
        self.disconnects += 1


class _Holder:
    def __init__(self, conn: _FlakyConnection) -> None:
        self.conn = conn

    def connection(self, pool: object) -> _FlakyConnection:
        return self.conn


@pytest.mark.redis_py6  # the direct path
@pytest.mark.parametrize("failures", [1, 2])
def test_an_operations_exchange_that_fails_is_retried_by_the_connections_policy(failures):
    # Given an operation's connection that fails `failures` times, with a
    # policy of two retries
    conn = _FlakyConnection(failures, retries=2)
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=Connection))
    # When a command is run on it
    replies = redis_wire.run(client, [("SET", "k", "v")], {}, _Holder(conn))
    # Then it was sent until it went through, reconnecting after each failure
    assert replies == ["OK"]
    assert (conn.sends, conn.disconnects) == (failures + 1, failures)


@pytest.mark.redis_py6  # the direct path
def test_an_exchange_that_fails_past_the_policy_is_sent_once_more_on_a_kept_connection():
    # Given a kept connection that fails more often than its policy retries
    conn = _FlakyConnection(3, retries=2)
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=Connection))
    # When a command is run on it, it gets one more round of the policy
    # (the connection may have died while the thread did something else)
    assert redis_wire.run(client, [("SET", "k", "v")], {}, _Holder(conn)) == ["OK"]
    assert conn.sends == 4
    # ... and a connection failing past that as well raises the last failure
    conn = _FlakyConnection(6, retries=2)
    with pytest.raises(RedisConnectionError, match="send 6 lost"):
        redis_wire.run(client, [("SET", "k", "v")], {}, _Holder(conn))
    assert conn.sends == 6
    assert conn.disconnects == 3 + 1 + 3 + 1  # each failure, the reconnect, the final one
