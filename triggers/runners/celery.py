"""The default runner: each ready instance becomes one Celery message."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import conf
from ..exceptions import ConfigurationError
from ..registry import trigger_managers
from ..storages import storage_backends
from .base import BaseTaskRunner, build_message

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..types import TaskInstance


logger = logging.getLogger(__name__)

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
        app = task.app
        bound_broker_timeouts(app)
        if app.conf.task_always_eager:
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
            exc.broker_url = safe_broker_url(app)  # type: ignore[attr-defined]
            raise


def safe_broker_url(app: Any) -> str:
    """The app's broker URL with any password masked."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(str(app.conf.broker_url or "")))


def check_rebuildable(manager: TriggerManager, task_instance: TaskInstance) -> None:
    """Refuse to send what no worker could rebuild: a storage class, or a
    manager class without a registered ancestor, defined in a function or in
    ``__main__`` (a worker process cannot import those)."""
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
# Through Celery's public API only. Most sends build the message with
# ``app.amqp.create_task_message`` and send it with ``send_task_message``
# (both in Celery's API reference, ``celery.app.amqp``): what ``apply_async``
# calls, without what it would otherwise spend on every call -- reading
# settings through Django's (task options, eager mode, sent events), the
# result backend's hook, an AsyncResult nobody reads, a producer taken from
# and returned to the pool. Any case that needs more goes through
# ``apply_async`` itself (see ``_Plan.direct`` and :func:`publish`). Either
# way:
# - each thread keeps one producer on a broker connection of its own;
# - ``repr`` of the kwargs is given for the message headers (our kwargs are
#   a few short strings, so it is what ``saferepr`` would give);
# - once this connection declared the queue, ``declare=[]`` spares kombu
#   copying and binding it again (kombu forgets what it declared when the
#   connection is re-established, and we ask it each time).
# What does not change between two sends is worked out once: per task (its
# options and route, ``_Plan``), per thread (the reply queue and the origin
# header apply_async would give, ``_Sender``).
#
# kombu's Redis transport builds a redis-py client for every command it
# sends (``Channel.conn_or_acquire``; redis-py's client copies its table of
# reply parsers, about 50 us); no transport option turns that off. A publish
# batch (kombu's ``Producer.batch``) keeps one client and pipeline for its
# life, so each thread holds a batch of one message open on its producer:
# every publish is sent at once, through them. A batch sends once, without
# retries; when that fails the batch is dropped and the message sent again
# the ordinary way, under Celery's publish retry policy.

_producers = threading.local()

#: How many forks this process is from the one that imported this module: a
#: sender made before a fork belongs to the parent (its socket, its pid in
#: the origin header). Counted instead of comparing ``os.getpid()``, a
#: system call, on every publish.
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


#: Task ids' worth of random bytes a sender reads at once.
_IDS_PER_READ = 64


class _Sender:
    """This thread's producer on a broker connection of its own (not the
    app's pool, which a long-lived producer per thread could exhaust), and
    the publish batch held open on it once a publish went through (on
    transports that batch: kombu's Redis transport)."""

    def __init__(self, app: Any) -> None:
        from celery.utils.nodenames import anon_nodename

        self.app = app
        self.forks = _forks[0]
        self.producer = app.amqp.Producer(app.connection_for_write(), auto_declare=False)
        self.batch: contextlib.ExitStack | None = None
        # What apply_async puts in the message headers of a send from this
        # thread of this process: the thread's reply queue and the process's
        # node name (both fixed for the thread's life).
        self.reply_to = app.thread_oid
        self.origin = anon_nodename()
        # Random digits for this thread's next task ids, read from
        # os.urandom 64 ids at a time (one system call, not one per id); a
        # forked child builds its own sender, so never reuses these.
        self.digits = ""
        self.digits_at = 0

    def task_id(self) -> str:
        at = self.digits_at
        if at >= len(self.digits):
            self.digits = os.urandom(16 * _IDS_PER_READ).hex()
            at = 0
        self.digits_at = at + 32
        return task_id(self.digits, at)

    def open_batch(self) -> None:
        if self.batch is None and self.producer.supports_batch_publish:
            batch = contextlib.ExitStack()
            batch.enter_context(self.producer.batch(max_size=1))
            self.batch = batch

    def drop_batch(self, exc: BaseException) -> None:
        batch, self.batch = self.batch, None
        if batch is not None:
            # Leaving with the error discards the batch and releases its client.
            batch.__exit__(type(exc), exc, exc.__traceback__)


def _sender(app: Any) -> _Sender:
    """This thread's sender for ``app``; rebuilt in a forked child, whose
    inherited socket belongs to the parent."""
    try:
        held = _producers.by_app
    except AttributeError:
        held = _producers.by_app = {}
    sender = held.get(id(app))
    if sender is None or sender.app is not app or sender.forks != _forks[0]:
        sender = held[id(app)] = _Sender(app)
    return sender


#: Task attributes ``apply_async`` takes its default options from.
_TASK_OPTIONS = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "serializer",
    "delivery_mode",
    "compression",
    "time_limit",
    "soft_time_limit",
    "immediate",
    "mandatory",
)


class _Plan:
    """How one task's messages are sent, worked out once per task and router
    (Celery builds a new router when ``task_routes`` change)."""

    def __init__(self, task: Any) -> None:
        from celery import Task
        from celery.backends.base import BaseBackend

        app = task.app
        cls = type(task)
        self.task = task
        self.router = router = app.amqp.router
        # As apply_async passes them: unset ones too (as None).
        options = {name: getattr(task, name, None) for name in _TASK_OPTIONS}
        time_limit = options.pop("time_limit", None)
        soft_time_limit = options.pop("soft_time_limit", None)
        ignore_result = bool(task.ignore_result)
        #: create_task_message's arguments that are the same for every send.
        self.message_options: dict[str, Any] = {
            "time_limit": time_limit,
            "soft_time_limit": soft_time_limit,
            "create_sent_event": bool(app.conf.task_send_sent_event),
            "ignore_result": ignore_result,
            "argsrepr": "()",
        }
        #: Whether create/send_task_message sends what apply_async would:
        #: nothing overridden, no option that changes the message per call,
        #: no result-backend hook to call, no argument check that could fail.
        self.direct = bool(
            cls.apply_async is Task.apply_async
            and cls.shadow_name is Task.shadow_name
            and not router.routes
            and not task.expires
            and not getattr(task, "pydantic", False)
            and not (task.typing and not _takes_any_kwargs(task.run))
            # apply_async refuses a soft limit above the hard one.
            and not (soft_time_limit or 0) > (time_limit or float("inf"))
            and (ignore_result or type(app.backend).on_task_call is BaseBackend.on_task_call)
        )
        #: Without task_routes the route depends on nothing but the task.
        self.route: dict[str, Any] | None = None
        #: The route with ``declare=[]``, for a connection that declared its
        #: queue; and that queue's key in kombu's record of what it declared
        #: (a named queue's: an unnamed one gets its name when declared).
        self.declared_route: dict[str, Any] = {}
        self.queue_key: int | None = None
        if not router.routes:
            self.route = dict(router.route(dict(options), task.name, (), {}, task))
            self.declared_route = {**self.route, "declare": []}
            queue = self.route.get("queue")
            if queue is not None and getattr(queue, "name", None):
                self.queue_key = hash(queue)


def _takes_any_kwargs(run: Any) -> bool:
    import inspect

    try:
        parameters = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


_plans: dict[int, _Plan] = {}


def _plan(task: Any, app: Any = None) -> _Plan:
    if app is None:
        app = task.app
    plan = _plans.get(id(task))
    if plan is None or plan.task is not task or plan.router is not app.amqp.router:
        plan = _plans[id(task)] = _Plan(task)
    return plan


def _declared(plan: _Plan, producer: Any) -> dict[str, Any]:
    """The route's options, with ``declare=[]`` once this connection
    declared its queue."""
    if plan.route is None:
        return {}
    if plan.queue_key is not None:
        connection = producer.connection
        if connection.connected and plan.queue_key in connection.declared_entities:
            return plan.declared_route
    return plan.route


#: The variant nibble of a random UUID for each value of its random nibble.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def task_id(digits: str | None = None, at: int = 0) -> str:
    """A new random (version 4) UUID in its usual text form, as kombu's
    ``uuid()`` (what ``apply_async`` uses) gives, without building the
    ``uuid.UUID`` object: 16 bytes from ``os.urandom`` (or the 32 hex digits
    of them at ``at`` in ``digits``), the version and variant bits set as
    RFC 4122 says."""
    if digits is None:
        digits = os.urandom(16).hex()
    return (
        f"{digits[at : at + 8]}-{digits[at + 8 : at + 12]}-4{digits[at + 13 : at + 16]}-"
        f"{_UUID_VARIANT[digits[at + 16]]}{digits[at + 17 : at + 20]}-{digits[at + 20 : at + 32]}"
    )


def publish(task: Any, kwargs: dict[str, Any], countdown: float | None = None) -> str:
    """Send ``task`` with ``kwargs`` as ``task.apply_async(kwargs=kwargs,
    countdown=countdown)`` would, on this thread's producer; returns the
    task id."""
    app = task.app
    sender = _sender(app)
    if sender.batch is not None:
        try:
            return _send(app, task, kwargs, countdown, sender)
        except Exception as exc:
            sender.drop_batch(exc)
            logger.info("publishing %s in a batch failed (%s); sending it again", task.name, exc)
    sent = _send(app, task, kwargs, countdown, sender)
    sender.open_batch()
    return sent


def _send(
    app: Any, task: Any, kwargs: dict[str, Any], countdown: float | None, sender: _Sender
) -> str:
    plan = _plan(task, app)
    producer = sender.producer
    options = _declared(plan, producer)
    # Sent from inside a worker task, apply_async links the new task to the
    # running one (parent and root ids).
    if not plan.direct or countdown or app.current_worker_task is not None:
        queue = {"queue": options["queue"]} if "queue" in options else {}
        declare = {"declare": options["declare"]} if "declare" in options else {}
        result = task.apply_async(
            kwargs=kwargs,
            countdown=countdown,
            producer=producer,
            argsrepr="()",
            kwargsrepr=repr(kwargs),
            **queue,
            **declare,
        )
        return str(result.id)
    amqp = app.amqp
    new_id = sender.task_id()
    message = amqp.create_task_message(
        new_id,
        task.name,
        (),
        kwargs,
        reply_to=sender.reply_to,
        origin=sender.origin,
        kwargsrepr=repr(kwargs),
        **plan.message_options,
    )
    if sender.batch is not None:
        amqp.send_task_message(producer, task.name, message, retry=False, **options)
    else:
        amqp.send_task_message(producer, task.name, message, **options)
    return new_id
