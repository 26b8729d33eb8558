"""What every task runner shares: the registry-facing base class, the
message a runner sends, and finding the Celery task an instance runs."""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import conf
from ..exceptions import ConfigurationError
from ..registry import trigger_managers
from ..storages import storage_backends

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..task import TriggerTask
    from ..types import TaskInstance

__all__ = [
    "DEFAULT_TASK_RUNNER",
    "BaseTaskRunner",
    "build_message",
    "default_runner",
    "forced_runner",
    "force_runner",
    "runnable_task_class",
]

T = TypeVar("T")


class _BuiltinDefault(str):
    """The shipped value of ``DEFAULT_TASK_RUNNER``; its own type tells it
    apart from the same key assigned by an application."""

    __slots__ = ()


_SHIPPED = _BuiltinDefault("celery")

#: Runner for tasks whose configuration has no ``using`` and whose manager
#: does not name its own: a registry key or a runner class. Applications may
#: reassign ``triggers.runners.DEFAULT_TASK_RUNNER`` at any time; it is read
#: at dispatch time and wins over ``TRIGGERS['DEFAULT_RUNNER']``.
DEFAULT_TASK_RUNNER: str | type[BaseTaskRunner] = _SHIPPED

_forced: dict[str, str | None] = {"key": None}
_forced_lock = threading.Lock()


def default_runner() -> str | type[BaseTaskRunner]:
    """The default runner now: ``DEFAULT_TASK_RUNNER`` as the application
    last set it (on ``triggers.runners`` or this module), else
    ``TRIGGERS['DEFAULT_RUNNER']``, else ``'celery'``."""
    package = sys.modules.get("triggers.runners")
    if package is not None:
        value = getattr(package, "DEFAULT_TASK_RUNNER", _SHIPPED)
        if not isinstance(value, _BuiltinDefault):
            return value
    value = globals().get("DEFAULT_TASK_RUNNER", _SHIPPED)
    if not isinstance(value, _BuiltinDefault):
        return value
    return conf.get("DEFAULT_RUNNER") or str(_SHIPPED)


def runner_key(choice: str | type[BaseTaskRunner]) -> str:
    """The registry key (or dotted path) of a runner key or class."""
    if isinstance(choice, str):
        return str(choice)
    from . import task_runners

    return task_runners.key_for(choice)


def forced_runner() -> str | None:
    """A runner key that overrides every task's, ``using`` included (a tool
    for this library's own tests; the test mixin replaces only the default)."""
    return _forced["key"]


def force_runner(key: str | None) -> str | None:
    """Make every task run on ``key`` (``None`` restores normal selection);
    returns the previous override."""
    with _forced_lock:
        previous, _forced["key"] = _forced["key"], key
    return previous


def build_message(manager: TriggerManager, task_instance: TaskInstance) -> dict[str, Any]:
    """The kwargs a worker needs to rebuild the same manager and storage and
    run one instance. Trigger kwargs are read from storage, not sent."""
    storage = manager.storage
    message = {
        "uid": storage.uid,
        "instance": task_instance.name,
        "manager": trigger_managers.key_for(type(manager)),
        "storage": storage_backends.key_for(type(storage)),
        "storage_kwargs": storage.get_init_kwargs(),
    }
    if "." in message["manager"]:
        # Not registered: a worker that cannot rebuild it falls back to its
        # nearest registered ancestor (reliability, issue 8 item 4).
        message["manager_fallbacks"] = trigger_managers.fallbacks_for(type(manager))
    return message


#: Loaders of the Celery apps whose task modules were imported for resolve().
_LOADED: weakref.WeakSet[Any] = weakref.WeakSet()

#: The Celery task classes runners can run: TriggerTask adds itself when
#: triggers.task is imported (it builds on this module, not the other way).
_RUNNABLE: tuple[type, ...] = ()


def runnable_task_class(cls: type[T]) -> type[T]:
    """Declare ``cls`` (a Celery task class) the kind of task :meth:`BaseTaskRunner.resolve`
    accepts; used as a class decorator by :class:`~triggers.task.TriggerTask`."""
    global _RUNNABLE
    if cls not in _RUNNABLE:
        _RUNNABLE = (*_RUNNABLE, cls)
    return cls


class BaseTaskRunner:
    """Hands ready instances to something that executes them."""

    #: Registry key (``triggers.runners`` entry point name).
    name = ""

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        """Start (or enqueue) ``task_instance``; called while the session is
        locked, so the executor cannot claim it before it is marked
        ``scheduled``. Raise to report that it could not be dispatched."""
        raise NotImplementedError

    @staticmethod
    def resolve(target: str, task_name: str | None = None) -> TriggerTask:
        """The registered :class:`~triggers.task.TriggerTask` called ``target``.

        Looked up in the Celery app's task registry only. A name it does not
        know makes the app import its own task modules once (Celery's
        ``imports``/``include`` settings and ``autodiscover_tasks()``); a
        module named by ``target`` itself is never imported.
        """
        from celery import current_app

        task = current_app.tasks.get(target)
        if task is None:
            loader = current_app.loader  # one per app
            if loader not in _LOADED:
                _LOADED.add(loader)
                loader.import_default_modules()
                task = current_app.tasks.get(target)
        if task is None:
            raise ConfigurationError(
                f"no Celery task named {target!r} is registered with the Celery app "
                "(list its module in the app's imports or let autodiscover_tasks() find it)",
                task=task_name,
                directive="run",
            )
        if not isinstance(task, _RUNNABLE):
            raise ConfigurationError(
                f"Celery task {target!r} is not a TriggerTask subclass",
                task=task_name,
                directive="run",
            )
        return cast("TriggerTask", task)
