"""The default runner: each ready instance becomes one Celery message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        task.apply_async(kwargs=build_message(manager, task_instance), countdown=cooldown or None)
