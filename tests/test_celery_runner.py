"""The default runner on a real Celery worker process and a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, signals
from django.conf import settings

from tests.test_faults import RedisProxy  # the proxy that can lose a reply
from tests.utils import wait_for
from tests.worker import delete_run_queue
from triggers.manager import TriggerManager
from triggers.runners.celery import _plan, _sender, publish
from triggers.storages.cache import CacheStorageBackend
from triggers.task import TriggerTask
from triggers.types import TaskInstance


def status_of(manager: TriggerManager, name: str) -> str | None:
    instances = manager.storage.instances
    return instances[name].status if name in instances else None


def test_workflow_runs_on_a_real_worker_and_cascades(celery_worker, unique_uid):
    # Given a two-step workflow whose second task waits for the first's cascade
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": "triggers.testing.PassThruTask"},
            "t_second": {"after": ["t_first"], "run": "triggers.testing.PassThruTask"},
        }
    )
    # When the trigger fires in this process
    scheduled = manager.fire("start", {"n": 1})
    assert [i.name for i in scheduled] == ["t_first#0"]
    # Then the worker runs both, and the same manager object sees the result
    wait_for(lambda: status_of(manager, "t_second#0") == TaskInstance.STATUS_FINISHED, timeout=20)
    first = manager.storage["t_first#0"]
    assert first.status == TaskInstance.STATUS_FINISHED
    assert first.metadata["result"] == {"kwargs": {"start": {"n": 1}}}
    second = manager.storage["t_second#0"]
    assert second.metadata["kwargs"] == {"t_first": {"kwargs": {"start": {"n": 1}}}}


class ProbeTask(TriggerTask):
    """A task with options of its own (published by a test app of its own,
    whose queue no worker reads)."""

    name = "tests.test_celery_runner.ProbeTask"
    time_limit = 30
    soft_time_limit = 20
    serializer = "json"


def _sent(send: Callable[[], object]) -> dict[str, Any]:
    """What Celery's before_task_publish signal saw of one send, without
    what differs between any two sends (ids, the thread's reply queue)."""
    seen: list[dict[str, Any]] = []

    def record(sender: str, body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        seen.append(
            {
                "task": sender,
                "body": body,
                "headers": {k: v for k, v in headers.items() if k not in {"id", "root_id"}},
                "exchange": kwargs["exchange"],
                "routing_key": kwargs["routing_key"],
                "properties": {
                    k: v for k, v in kwargs["properties"].items() if k != "correlation_id"
                },
                "retry_policy": kwargs["retry_policy"],
            }
        )

    signals.before_task_publish.connect(record, weak=False)
    try:
        send()
    finally:
        signals.before_task_publish.disconnect(record)
    assert len(seen) == 1, seen
    return seen[0]


def _server_of(client: Any) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))


def _probe_app(broker_url: str | None = None) -> tuple[Celery, Any]:
    """ProbeTask on a Celery app like the suite's but with a queue of its own.

    The app is never finalized (it would raise): finalizing binds every
    TriggerTask class to it, so the suite's tasks would publish to its queue.
    Only ProbeTask is bound to it."""
    app = Celery("triggers-publish-probe", set_as_current=False, autofinalize=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_default_queue = f"triggers-publish-probe-{uuid.uuid4().hex}"
    if broker_url is not None:
        app.conf.broker_url = broker_url
    ProbeTask.bind(app)
    return app, ProbeTask()


def _close_probe_app(app: Celery) -> None:
    queue = app.conf.task_default_queue
    app.control.purge()
    delete_run_queue(app)
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        # kombu's bindings of the queue (to an exchange of the same name);
        # this client adds the run's key prefix itself.
        with app.connection_for_write() as connection:
            bindings = ("_kombu.binding", "_kombu.binding_permanent")
            connection.default_channel.client.delete(*(f"{b}.{queue}" for b in bindings))
    app.close()


@pytest.fixture
def probe() -> Iterator[Any]:
    app, task = _probe_app()
    yield task
    _close_probe_app(app)


def test_a_publish_sends_what_apply_async_sends(probe):
    # Given a task with its own time limits and serializer, and a message
    message = {"uid": "u1", "instance": "t_x#0", "manager": "default", "storage": "cache"}
    # (which the runner sends with create/send_task_message, not apply_async)
    assert _plan(probe).direct
    # When the runner publishes it, and apply_async sends the same kwargs
    ours = _sent(lambda: publish(probe, dict(message)))
    theirs = _sent(lambda: probe.apply_async(kwargs=dict(message)))
    # Then both messages are the same but for their ids, and both went out
    # (kwargs shown with repr, which for these strings is what saferepr gives)
    assert ours == theirs
    queue = probe.app.conf.task_default_queue
    assert ours["routing_key"] == queue
    assert ours["headers"]["timelimit"] == [30, 20]
    assert probe.app.control.purge() == 2


@pytest.mark.redis_broker
def test_a_publish_whose_batch_fails_is_sent_again_the_ordinary_way(redis_client):
    # Given a probe app whose broker is the suite's Redis (whatever broker the
    # suite uses) reached through a proxy, and a
    # publish that went through (so this thread holds a batch open)
    proxy = RedisProxy(_server_of(redis_client))
    app, task = _probe_app(f"redis://127.0.0.1:{proxy.port}/{settings.REDIS_BROKER_DB}")
    try:
        message = {"uid": "u1", "instance": "t_x#0", "manager": "default", "storage": "cache"}
        publish(task, dict(message))
        assert _sender(app).batch is not None
        # When the reply to the next publish is lost (the batch cannot tell
        # whether Redis took the message)
        proxy.drop_next_reply.set()
        task_id = publish(task, dict(message))
        # Then the message is sent again without the batch, and the publish
        # succeeds; Redis holds all three (a duplicate is harmless: a worker
        # runs an instance only while it holds the instance's claim)
        assert task_id
        assert proxy.dropped == 1
        assert _sender(app).batch is not None  # a new one, after that success
        assert app.control.purge() == 3
    finally:
        _close_probe_app(app)
        proxy.close()
