"""The default runner: each ready instance becomes one Celery message."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import celery
from kombu.utils.uuid import uuid

from .. import conf
from ..exceptions import ConfigurationError
from .base import BaseTaskRunner, build_message

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..types import TaskInstance


#: kombu Redis transports whose sockets block forever unless given timeouts.
_REDIS_SCHEMES = ("redis", "rediss", "sentinel", "redis+socket")


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
    if getattr(app, "_triggers_bounded", False):
        return
    app._triggers_bounded = True
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
            if cooldown or not publishes_directly(task):
                task.apply_async(kwargs=message, countdown=cooldown or None)
            else:
                publish(task, message)
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


# -- the publish fast path ---------------------------------------------------
# ``apply_async`` costs several times the broker round trip it makes (exec
# options merged from Django-backed settings, ``saferepr`` of the kwargs, a
# producer taken from and returned to the pool, an AsyncResult nobody reads).
# For the common case -- a plain TriggerTask sent from outside a worker, with
# no countdown -- we build the same message with Celery's own
# ``create_task_message`` and send it with ``send_task_message`` (routing,
# signals, retry policy and serializer all still Celery's) on a producer this
# thread keeps. Anything else goes through ``apply_async``.

_producers = threading.local()


def publishes_directly(task: Any) -> bool:
    """Whether :func:`publish` sends exactly what ``apply_async`` would."""
    # In a worker, apply_async links the new task to the running one.
    return _plan(task).plain and task.app.current_worker_task is None


class _Plan:
    """What :func:`publish` needs to know about one task, worked out once:
    Celery reads its settings through Django's on every call, which costs
    more than building the message."""

    def __init__(self, task: Any) -> None:
        cls = type(task)
        self.task = task
        self.plain = bool(
            cls.apply_async is celery.Task.apply_async
            and cls.shadow_name is celery.Task.shadow_name
            and not task.expires
            and not getattr(task, "pydantic", False)
            # apply_async rejects a soft limit above the hard one.
            and not (task.soft_time_limit or 0) > (task.time_limit or float("inf"))
        )
        options = {k: v for k, v in task._get_exec_options().items() if v is not None}
        self.time_limit = options.pop("time_limit", None)
        self.soft_time_limit = options.pop("soft_time_limit", None)
        options.pop("expires", None)
        self.ignore_result = options.pop("ignore_result", task.ignore_result)
        self.options = options
        app = task.app
        self.sent_event = app.conf.task_send_sent_event
        # Without task_routes the route depends on nothing but the task;
        # Celery builds a new router when task_routes change.
        self.router = router = app.amqp.router
        self.route = None if router.routes else router.route(dict(options), task.name, (), {}, task)


_plans: dict[int, _Plan] = {}


def _plan(task: Any) -> _Plan:
    plan = _plans.get(id(task))
    if plan is None or plan.task is not task or plan.router is not task.app.amqp.router:
        plan = _plans[id(task)] = _Plan(task)
    return plan


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


def _reuse_redis_clients(channel: Any) -> None:
    """kombu's Redis transport builds a new redis-py client for every
    command it sends, and building one (its table of reply parsers) costs
    more than the command. On the channel of our own producer, hand back the
    same client for the same pool instead: clients keep no state of their own
    beyond the pool they wrap."""
    factory = getattr(channel, "Client", None)
    if factory is None or getattr(factory, "_triggers_reused", False):
        return
    made: dict[tuple[int, int], Any] = {}

    def client(**kwargs: Any) -> Any:
        key = (id(kwargs.get("connection_pool")), id(kwargs.get("credential_provider")))
        found = made.get(key)
        if found is None or found[0] is not kwargs.get("connection_pool"):
            found = made[key] = (kwargs.get("connection_pool"), factory(**kwargs))
        return found[1]

    client._triggers_reused = True  # type: ignore[attr-defined]
    if channel.__class__.__module__ == "kombu.transport.redis":
        channel.Client = client


def publish(task: Any, kwargs: dict[str, Any]) -> str:
    """Send ``task`` with ``kwargs`` as ``task.apply_async(kwargs=kwargs)``
    would (for tasks :func:`publishes_directly` accepts); returns the task id."""
    app = task.app
    amqp = app.amqp
    plan = _plan(task)
    if plan.route is not None:
        options = dict(plan.route)
    else:
        options = amqp.router.route(dict(plan.options), task.name, (), kwargs, task)
    task_id = uuid()
    message = amqp.create_task_message(
        task_id,
        task.name,
        (),
        kwargs,
        reply_to=app.thread_oid,
        time_limit=plan.time_limit,
        soft_time_limit=plan.soft_time_limit,
        create_sent_event=plan.sent_event,
        ignore_result=plan.ignore_result,
        # Our kwargs are a few short strings: repr() is what saferepr gives.
        argsrepr="()",
        kwargsrepr=repr(kwargs),
        **options,
    )
    producer = _producer(app)
    if producer.connection.connected:
        # Touching the channel of an unconnected producer connects it with
        # kombu's own (slower) retry loop instead of the publish retry policy.
        _reuse_redis_clients(producer.channel)
    queue = options.get("queue")
    if queue is not None and hash(queue) in producer.connection.declared_entities:
        # Declared on this connection already (kombu forgets on reconnect):
        # skip kombu's own re-check, which copies and binds the queue.
        options = {**options, "declare": []}
    with producer.connection._reraise_as_library_errors():
        amqp.send_task_message(producer, task.name, message, **options)
    return task_id
