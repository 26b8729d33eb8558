"""Recording why an instance failed: the exception as instance metadata,
and a failure that happened outside a task body (rebuilding the manager,
claiming, storing the result), recorded with retries on transient errors."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import TYPE_CHECKING, Any

from . import conf
from .messages import is_transient
from .validation import normalise_kwargs

if TYPE_CHECKING:
    from .manager import TriggerManager

__all__ = ["exception_meta", "qualname", "record_outside_task"]

logger = logging.getLogger("triggers.task")


def qualname(cls: type) -> str:
    """``module.QualifiedName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_meta(exc: BaseException) -> dict[str, Any]:
    """What an instance's metadata records of the exception it failed with."""
    context = getattr(exc, "context", None)
    try:
        context = normalise_kwargs("exception context", context) if context else {}
    except (TypeError, ValueError):
        context = {"repr": repr(context)}
    return {
        "exc_type": qualname(type(exc)),
        "exc_mro": [qualname(c) for c in type(exc).__mro__ if c not in (object, BaseException)],
        "exc_message": str(exc),
        "exc_traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "exc_context": context,
    }


def record_outside_task(
    manager: TriggerManager, name: str, exc: BaseException, token: str | None
) -> None:
    """Mark instance ``name`` failed with ``exc``, raised outside its task
    body (``token``: the run's claim, ``None`` if it never started); log it,
    and retry the write on transient errors (``TRIGGERS['WORKER_RETRIES']``)."""
    uid = manager.storage.uid
    logger.error(
        "%s in session %r failed outside its task body: %s: %s",
        name,
        uid,
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra={"triggers_session": uid, "triggers_instance": name},
    )
    meta = exception_meta(exc)
    meta["failed_outside_task"] = True
    retries = int(conf.get("WORKER_RETRIES"))
    for attempt in range(retries + 1):
        try:
            if token is None:
                manager.worker.fail_unstarted(name, meta)
            else:
                manager.worker.fail(name, token, meta)
            exc._triggers_recorded = True  # type: ignore[attr-defined]
            return
        except Exception as again:
            if not is_transient(again) or attempt == retries:
                logger.critical(
                    "could not record the failure of %s in session %r (%s: %s); it "
                    "stays %s until resent (find_stuck_instances / triggers_inspect)",
                    name,
                    uid,
                    type(again).__name__,
                    again,
                    "running" if token else "scheduled",
                    exc_info=again,
                )
                return
            threading.Event().wait(min(0.5 * 2**attempt, 30.0))
