"""Handing ready instances to their runners, while the session is locked.

Which runner an instance goes to: a runner forced for the moment
(:func:`~triggers.runners.base.force_runner`), else its task's ``using``,
else its manager's ``default_task_runner_name``, else the current default
(:func:`~triggers.runners.base.default_runner`, read at dispatch time so a
reassigned ``DEFAULT_TASK_RUNNER`` counts).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Protocol

from .runners.base import BaseTaskRunner, default_runner, forced_runner, runner_key
from .storages.base import BaseTriggerStorage
from .storages.transaction import Transaction
from .types import TaskConfig, TaskInstance

__all__ = ["CurrentDefaultRunner", "Dispatcher", "dispatch", "runner_choice"]

logger = logging.getLogger("triggers.manager")


class CurrentDefaultRunner:
    """Reads as the key of the runner tasks without ``using`` get right now."""

    def __get__(self, obj: object, owner: type | None = None) -> str:
        return runner_key(default_runner())


class Dispatcher(Protocol):
    """A manager, as far as dispatching needs one."""

    storage: BaseTriggerStorage
    default_task_runner_name: Any

    def get_runner(self, config: TaskConfig) -> Any: ...


_NAME = "default_task_runner_name"
_MISSING = object()


def runner_choice(manager: Dispatcher, config: TaskConfig) -> str | type[BaseTaskRunner]:
    """The runner (registry key or class) ``manager`` hands ``config``'s instances to."""
    forced = forced_runner()
    if forced:
        return forced
    if config.using:
        return config.using
    # The usual case, looked up in the class dictionaries (inspect's
    # getattr_static, which checks far more, cost ~2 us per dispatch): the
    # manager's class keeps the shipped descriptor and the instance sets
    # nothing. Anything else is looked up as it always was.
    for klass in type(manager).__mro__:
        found = klass.__dict__.get(_NAME, _MISSING)
        if found is not _MISSING:
            if isinstance(found, CurrentDefaultRunner) and _NAME not in getattr(
                manager, "__dict__", ()
            ):
                return default_runner()
            break
    own = inspect.getattr_static(manager, _NAME)
    if isinstance(own, CurrentDefaultRunner):
        return default_runner()
    return manager.default_task_runner_name


def dispatch(manager: Dispatcher, txn: Transaction, inst: TaskInstance) -> bool:
    """Hand a ready instance to its runner while the session is locked (a
    worker cannot claim it before ``txn`` is written), then mark it
    scheduled. On failure the instance stays ready, the error is noted on
    it, and ``DispatchError`` is raised once the rest is written."""
    try:
        manager.get_runner(inst.config).run(manager, inst)
    except Exception as exc:
        logger.error("could not dispatch %s in session %r: %s", inst.name, manager.storage.uid, exc)
        inst.metadata["dispatch_error"] = f"{type(exc).__name__}: {exc}"
        txn.save(inst)
        txn.dispatch_failures[inst.name] = exc
        return False
    inst.metadata.pop("dispatch_error", None)
    inst.set_status(TaskInstance.STATUS_SCHEDULED)
    txn.save(inst)
    return True
