"""The Redis protocol text the storage sends: byte for byte what redis-py
itself would send for the same commands, script KEYS included (packed once
per session and reused), and round-tripped through a real server."""

from __future__ import annotations

import uuid

import pytest
from redis.connection import Connection

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
