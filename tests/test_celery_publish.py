"""What the Celery runner works out once instead of on every publish: the
task id, the per-thread sender (rebuilt after a fork), and the messages a
held-open batch sends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.test_celery_runner import _close_probe_app, _probe_app, _sent
from triggers.runners import celery as runner_celery
from triggers.runners.celery import _sender, publish, task_id

MESSAGE = {"uid": "u1", "instance": "t_x#0", "manager": "default", "storage": "cache"}


@pytest.fixture
def any_probe() -> Iterator[Any]:
    """ProbeTask on an app of its own, on the suite's broker."""
    app, task = _probe_app()
    yield task
    _close_probe_app(app)


@pytest.mark.parametrize("source", ["task_id", "sender"])
def test_task_ids_are_random_version_4_uuids_in_their_usual_form(source, any_probe):
    # When many task ids are made, one at a time or by a thread's sender
    # (which reads random bytes for many at once, and reads again when they
    # run out)
    sender = _sender(any_probe.app)
    make = task_id if source == "task_id" else sender.task_id
    ids = [make() for _ in range(2000)]
    # Then each is a version 4 (random) RFC 4122 UUID, written as uuid4()
    # writes one, and no two are the same
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert len(set(ids)) == len(ids)
    # And every random bit varies (not a fixed pattern in any position but
    # the version and variant bits)
    varying = 0
    for parsed in map(uuid.UUID, ids):
        varying |= parsed.int ^ uuid.UUID(ids[0]).int
    fixed = (0xF000 << 64) | (0xC000 << 48)
    assert varying == ((1 << 128) - 1) & ~fixed


@pytest.fixture
def redis_probe(redis_client: Any) -> Iterator[Any]:
    """ProbeTask on an app whose broker is the suite's Redis (batching)."""
    kwargs = redis_client.connection_pool.connection_kwargs
    host, port = kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))
    app, task = _probe_app(f"redis://{host}:{port}/{settings.REDIS_BROKER_DB}")
    yield task
    _close_probe_app(app)


@pytest.mark.redis_broker
def test_a_publish_through_the_held_batch_sends_what_apply_async_sends(redis_probe):
    # Given a thread that published once (so it holds a batch open)
    publish(redis_probe, dict(MESSAGE))
    assert _sender(redis_probe.app).batch is not None
    # When it publishes again, through the batch, and apply_async sends the
    # same kwargs
    ours = _sent(lambda: publish(redis_probe, dict(MESSAGE)))
    theirs = _sent(lambda: redis_probe.apply_async(kwargs=dict(MESSAGE)))
    # Then both messages are the same but for their ids (origin and reply
    # queue included), and all three went out
    assert ours == theirs
    assert ours["headers"]["origin"].startswith(f"gen{os.getpid()}@")
    assert ours["retry_policy"] == theirs["retry_policy"]
    assert redis_probe.app.control.purge() == 3


@pytest.mark.redis_broker
def test_a_forked_child_builds_its_own_sender(redis_probe):
    # Given a sender this thread built and used
    publish(redis_probe, dict(MESSAGE))
    parent = _sender(redis_probe.app)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it finds, then leave at once
        code = 1
        try:
            child = _sender(redis_probe.app)
            fresh = child is not parent and child.producer is not parent.producer
            own_origin = child.origin.startswith(f"gen{os.getpid()}@")
            code = 0 if fresh and own_origin and child.batch is None else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    # When a forked child asks for the sender
    os.close(write)
    try:
        answer = os.read(read, 1)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    # Then it gets a new one (its own connection, its own pid in the origin
    # header), while the parent keeps its own
    assert answer == b"\x00"
    assert _sender(redis_probe.app) is parent
    assert runner_celery._forks[0] == parent.forks
    assert redis_probe.app.control.purge() == 1
