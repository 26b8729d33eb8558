"""The default runner: each ready instance becomes one Celery message."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import conf
from ..exceptions import ConfigurationError
from .base import BaseTaskRunner, build_message

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..types import TaskInstance


#: kombu Redis transports whose sockets block forever unless given timeouts.
_REDIS_SCHEMES = ("redis", "rediss", "sentinel", "redis+socket")


#: Apps whose broker options were looked at already.
_BOUNDED: weakref.WeakSet[Any] = weakref.WeakSet()


def bound_broker_timeouts(app: Any) -> None:
    """Give a Redis broker connection socket timeouts if the app set none.

    A fire publishes while it holds the session lock; without timeouts a
    broker that accepts connections but never answers (a hung server, a
    half-open connection) would block the fire, and every other fire on the
    session, forever. With them the publish fails within seconds and the
    instance stays ready to be re-sent (``resend_ready_instances()``).
    ``TRIGGERS['BROKER_TIMEOUT']`` sets the bound (``None`` leaves the app's
    transport options alone).
    """
    if app in _BOUNDED:
        return
    _BOUNDED.add(app)
    timeout = conf.get("BROKER_TIMEOUT")
    scheme = str(app.conf.broker_url or "").partition("://")[0]
    if timeout is None or scheme not in _REDIS_SCHEMES:
        return
    options = dict(app.conf.broker_transport_options or {})
    options.setdefault("socket_timeout", float(timeout))
    options.setdefault("socket_connect_timeout", float(timeout))
    app.conf.broker_transport_options = options


class CeleryTaskRunner(BaseTaskRunner):
    name = "celery"

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        task = self.resolve(task_instance.config.run, task_instance.config.name)
        bound_broker_timeouts(task.app)
        if task.app.conf.task_always_eager:
            # Eager mode would run the task inside the fire, under the session
            # lock the task itself needs: refuse rather than deadlock.
            raise ConfigurationError(
                "CeleryTaskRunner refuses to run with task_always_eager; use the "
                "'threading' runner (triggers.testing does this for tests)",
                task=task_instance.config.name,
                directive="using",
            )
        cooldown = task_instance.metadata.get("cooldown")
        check_rebuildable(manager, task_instance)
        message = build_message(manager, task_instance)
        try:
            publish(task, message, countdown=cooldown or None)
        except Exception as exc:
            # DispatchError names the broker it tried (password hidden).
            exc.broker_url = safe_broker_url(task.app)  # type: ignore[attr-defined]
            raise


def safe_broker_url(app: Any) -> str:
    """The app's broker URL with any password masked."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(str(app.conf.broker_url or "")))


def check_rebuildable(manager: TriggerManager, task_instance: TaskInstance) -> None:
    """Refuse to send what no worker could rebuild: a storage class, or a
    manager class without a registered ancestor, defined in a function or in
    ``__main__`` (a worker process cannot import those)."""
    from ..manager import trigger_managers
    from ..storages import storage_backends

    pair = (type(manager), type(manager.storage))
    if pair in _REBUILDABLE:
        return
    storage_cls = type(manager.storage)
    if not storage_backends.rebuildable(storage_cls):
        raise ConfigurationError(
            f"storage class {storage_cls.__module__}.{storage_cls.__qualname__} cannot be "
            "rebuilt in a Celery worker (it is defined in a function or in __main__); "
            "define it at module level or register it in the 'triggers.storages' registry",
            task=task_instance.config.name,
        )
    manager_cls = type(manager)
    if not trigger_managers.rebuildable(manager_cls) and not trigger_managers.fallbacks_for(
        manager_cls
    ):
        raise ConfigurationError(
            f"trigger manager class {manager_cls.__module__}.{manager_cls.__qualname__} "
            "cannot be rebuilt in a Celery worker and has no registered ancestor",
            task=task_instance.config.name,
        )
    _REBUILDABLE.add(pair)


_REBUILDABLE: set[tuple[type, type]] = set()


# -- publishing -------------------------------------------------------------
# Through Celery's public API only: ``apply_async`` with options it documents.
# What it would otherwise spend on every call, and how we avoid it:
# - a producer taken from and returned to the app's pool: each thread keeps
#   one producer on a broker connection of its own (``producer=``);
# - ``saferepr`` of the kwargs for the message headers: our kwargs are a few
#   short strings, so ``repr`` is given (``argsrepr``/``kwargsrepr``);
# - kombu copying and binding the queue to check it was declared: once this
#   connection declared the queue, ``declare=[]`` (kombu forgets what it
#   declared when the connection is re-established, and we ask it each time).

_producers = threading.local()


def _producer(app: Any) -> Any:
    """A producer on this thread's own broker connection (not the app's
    pool, which a long-lived producer per thread could exhaust); rebuilt in a
    forked child, whose inherited socket belongs to the parent."""
    held = getattr(_producers, "by_app", None)
    if held is None:
        held = _producers.by_app = {}
    entry = held.get(id(app))
    if entry is None or entry[0] is not app or entry[1] != os.getpid():
        producer = app.amqp.Producer(app.connection_for_write(), auto_declare=False)
        entry = held[id(app)] = (app, os.getpid(), producer)
    return entry[2]


class _Route:
    """The queue a task's messages go to, worked out once per router (a
    new router is built when ``task_routes`` change); ``None`` when routes
    may depend on the message."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.router = router = task.app.amqp.router
        self.queue: Any = None
        if not router.routes:
            given = {k: getattr(task, k, None) for k in ("queue", "exchange", "routing_key")}
            options = {k: v for k, v in given.items() if v is not None}
            self.queue = router.route(options, task.name, (), {}, task).get("queue")


_routes: dict[int, _Route] = {}


def _queue_options(task: Any, producer: Any) -> dict[str, Any]:
    """``queue`` (saves Celery looking up the default queue in the settings
    per call) and, once this connection declared it, ``declare=[]``."""
    route = _routes.get(id(task))
    if route is None or route.task is not task or route.router is not task.app.amqp.router:
        route = _routes[id(task)] = _Route(task)
    queue = route.queue
    if queue is None:
        return {}
    connection = producer.connection
    if connection.connected and hash(queue) in connection.declared_entities:
        return {"queue": queue, "declare": []}
    return {"queue": queue}


def publish(task: Any, kwargs: dict[str, Any], countdown: float | None = None) -> str:
    """``task.apply_async(kwargs=kwargs, countdown=countdown)`` on this
    thread's producer; returns the task id."""
    producer = _producer(task.app)
    result = task.apply_async(
        kwargs=kwargs,
        countdown=countdown,
        producer=producer,
        argsrepr="()",
        kwargsrepr=repr(kwargs),
        **_queue_options(task, producer),
    )
    return str(result.id)
