"""Writing trigger tasks: :class:`TriggerTask` (a Celery task) and the
:class:`TaskContext` its ``_run`` receives."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import celery
from celery import _state as celery_state

from . import conf
from .context import TaskContext
from .exceptions import (
    InvalidMessageError,
    KwargsValidationError,
    MaxRetriesExceeded,
    RetryRequested,
    SkipRequested,
    TaskResultError,
)
from .failures import exception_meta, qualname, record_outside_task
from .locking import renewer
from .manager import TriggerManager
from .messages import is_transient, manager_class, read_message, rebuild_storage
from .runners.base import runnable_task_class
from .types import TaskInstance
from .validation import normalise_kwargs
from .worker import WorkerProtocol

__all__ = [
    "MaxRetriesExceeded",
    "TaskContext",
    "TaskResultError",
    "TriggerTask",
    "KwargsValidationError",
]

logger = logging.getLogger(__name__)
#: The context of the ``_run`` executing in this thread (see ``TriggerTask.retry``).
_running = threading.local()


def _register_with_apps(cls: type[TriggerTask]) -> None:
    """Register a TriggerTask class with every Celery app, now and later.

    This is what Celery's own ``shared_task`` does for a function, through
    the same two hooks of ``celery._state`` (a callback run when an app is
    finalized, and the apps alive now): Celery has no public way to share a
    task class with every app. Only finalized apps are touched, so reading
    their task registry finalizes nothing."""

    def register(app: Any) -> None:
        existing = app.tasks.get(cls.name)
        if existing is None or type(existing) is not cls:
            app.register_task(cls())

    celery_state.connect_on_app_finalize(register)
    for app in celery_state._get_active_apps():
        if app.finalized:
            register(app)


class _Lease:
    """Keeps a worker's claim on a running instance alive."""

    def __init__(self, worker: WorkerProtocol, name: str, token: str, ms: int) -> None:
        self.worker, self.name, self.token, self.ms = worker, name, token, ms

    def renew(self) -> None:
        self.worker.renew_lease(self.name, self.token, self.ms)


@runnable_task_class
class TriggerTask(celery.Task):
    """Base class of trigger tasks. Subclasses implement :meth:`_run`.

    Named by dotted path (``app.tasks.ImportSubject``) unless ``name`` is set,
    and registered with the Celery app automatically. Set ``abstract = True``
    on an intermediate base class to keep it unregistered.
    """

    abstract: ClassVar[bool] = True
    # A worker that dies mid-task must not lose the message; running it again
    # is safe because only the run holding the instance's claim may finish it.
    acks_late = True
    reject_on_worker_lost = True
    max_retries = 3

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract"):
            return
        cls.abstract = False
        if not cls.__dict__.get("name"):
            cls.name = qualname(cls)
        _register_with_apps(cls)

    # -- to implement ----------------------------------------------------------
    def _run(self, context: TaskContext) -> Mapping[str, Any] | None:
        """Do the work; return the kwargs of the cascade (or ``None``)."""
        raise NotImplementedError

    def get_max_retries(self, context: TaskContext) -> int:
        """How deep a chain of retries may go for this instance."""
        return int(self.max_retries if self.max_retries is not None else 0)

    def _run_in(self, context: TaskContext) -> Mapping[str, Any] | None:
        """``_run(context)``, with ``context`` known to :meth:`retry`."""
        previous = getattr(_running, "context", None)
        _running.context = context
        try:
            return self._run(context)
        finally:
            _running.context = previous

    # -- for _run to raise -------------------------------------------------
    def retry(
        self,
        exc: BaseException | None = None,
        metadata: Mapping[str, Any] | None = None,
        replacement_kwargs: Mapping[str, Any] | None = None,
        cooldown: float | None = None,
    ) -> RetryRequested:
        """Return an exception that, raised from ``_run``, marks this instance
        ``replayed`` and schedules a clone after ``cooldown`` seconds (with
        ``replacement_kwargs`` if given).

        Called once the chain of retries is ``get_max_retries()`` deep, it
        raises :class:`MaxRetriesExceeded` itself (caused by ``exc``), so
        ``_run`` may catch that; uncaught, it fails the instance."""
        context = getattr(_running, "context", None)
        if context is not None and context.task is self:
            depth = int(context.task_instance.metadata.get("depth", 0))
            limit = self.get_max_retries(context)
            if depth >= limit:
                error = MaxRetriesExceeded(
                    f"{context.instance_name} asked to retry beyond max_retries={limit}"
                )
                error.__cause__ = exc
                if exc is not None:
                    # Stored with the failed instance (exc_context), so tests
                    # and operators see what the task kept retrying on.
                    error.context = {  # type: ignore[attr-defined]
                        "retry_cause": qualname(type(exc)),
                        "retry_cause_mro": [
                            qualname(c)
                            for c in type(exc).__mro__
                            if c not in (object, BaseException)
                        ],
                        "retry_cause_message": str(exc),
                    }
                raise error
        return RetryRequested(exc, metadata, replacement_kwargs, cooldown)

    def skip(self, metadata: Mapping[str, Any] | None = None) -> SkipRequested:
        """Return an exception that, raised from ``_run``, marks this instance
        ``skipped``."""
        return SkipRequested(metadata)

    # -- execution ---------------------------------------------------------------
    def run(
        self,
        uid: str,
        instance: str,
        manager: str = "default",
        storage: str = "cache",
        storage_kwargs: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        message = {
            "uid": uid,
            "instance": instance,
            "manager": manager,
            "storage": storage,
            "storage_kwargs": {} if storage_kwargs is None else storage_kwargs,
            **extra,
        }
        return self.execute_message(message, requeue=self._requeue)

    def _requeue(self, message: dict[str, Any], delay: float) -> None:
        self.apply_async(kwargs=message, countdown=delay)

    def execute_message(
        self,
        message: Mapping[str, Any],
        requeue: Any = None,
        manager: TriggerManager | None = None,
    ) -> dict[str, Any] | None:
        """Claim, run and finish the instance a runner message names.

        ``requeue(message, delay)`` is called when another live worker owns
        the instance or the session cannot be reached for now; without it
        this call waits and tries again. ``manager`` (in-process runners)
        is used instead of rebuilding one from the message. Every failure
        before the task body runs ends with the instance ``failed`` (or
        tried again) and an ERROR/WARNING log naming session and instance.
        """
        try:
            msg = read_message(message)
            if manager is None:
                storage = rebuild_storage(msg)
        except InvalidMessageError as exc:
            uid = message.get("uid") if isinstance(message, Mapping) else None
            logger.error("%s: %s (session %r)", self.name, exc, uid)
            raise
        except Exception as exc:
            # No storage, so nowhere to record the failure: say so loudly and
            # let the message fail (Celery records that too).
            logger.error(
                "cannot rebuild storage %r for %s in session %r (%s: %s); the instance "
                "stays scheduled until resent (find_stuck_instances / triggers_inspect)",
                message.get("storage"),
                message.get("instance"),
                message.get("uid"),
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            raise
        if manager is None:
            try:
                manager = manager_class(msg)(storage)
            except Exception as exc:
                self._fail_before_run(TriggerManager(storage), msg.instance, exc)
                return None
        name = msg.instance
        token = uuid.uuid4().hex
        lease_ms = int(float(conf.get("LEASE_EXPIRE")) * 1000)
        attempt = msg.attempt
        while True:
            try:
                claim = manager.worker.claim(name, token, lease_ms)
            except Exception as exc:
                if is_transient(exc) and attempt < int(conf.get("WORKER_RETRIES")):
                    attempt += 1
                    delay = min(0.5 * 2 ** (attempt - 1), 30.0)
                    logger.warning(
                        "could not claim %s in session %r (%s: %s); trying again in %.1fs "
                        "(attempt %d of %d)",
                        name,
                        manager.storage.uid,
                        type(exc).__name__,
                        exc,
                        delay,
                        attempt,
                        conf.get("WORKER_RETRIES"),
                    )
                    if requeue is not None:
                        requeue({**msg.as_dict(), "attempt": attempt}, delay)
                        return None
                    threading.Event().wait(delay)
                    continue
                self._fail_before_run(manager, name, exc)
                return None
            if claim.outcome != "busy":
                break
            delay = claim.wait_ms / 1000 + 0.1
            if requeue is not None:
                logger.info("%s is running elsewhere; trying again in %.1fs", name, delay)
                requeue(msg.as_dict(), delay)
                return None
            threading.Event().wait(min(delay, 1.0))
        if claim.outcome != "run" or claim.instance is None:
            logger.info(
                "not running %s in session %r: %s",
                name,
                manager.storage.uid,
                f"already {claim.instance.status}" if claim.instance else claim.reason,
            )
            return None
        lease = _Lease(manager.worker, name, token, lease_ms)
        renewer.add(lease, lease_ms / 3000)
        try:
            return self._execute(manager, claim.instance, token)
        except Exception as exc:
            if not getattr(exc, "_triggers_recorded", False):
                # Failed outside the task body (building its context, storing
                # its result): record it on the instance all the same.
                self._record_outcome(manager, name, exc, token)
            raise
        finally:
            renewer.remove(lease)

    def _fail_before_run(self, manager: TriggerManager, name: str, exc: BaseException) -> None:
        """Mark an instance that never started ``failed`` with ``exc``."""
        self._record_outcome(manager, name, exc, None)

    def _record_outcome(
        self, manager: TriggerManager, name: str, exc: BaseException, token: str | None
    ) -> None:
        record_outside_task(manager, name, exc, token)

    def _execute(
        self, manager: TriggerManager, inst: TaskInstance, token: str
    ) -> dict[str, Any] | None:
        context = TaskContext(manager, inst, self)
        started = time.monotonic()
        meta: dict[str, Any] = {
            "kwargs": context.trigger_kwargs,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }

        def finish_meta() -> dict[str, Any]:
            meta["log_level"] = max(context.log_level, int(inst.metadata.get("log_level", 0)))
            meta["duration"] = round(time.monotonic() - started, 6)
            return meta

        try:
            result = self._run_in(context)
            if result is None:
                result = {}
            if not isinstance(result, Mapping):
                raise TaskResultError(
                    f"{self.name}._run returned {type(result).__name__}; "
                    "it must return a mapping (the cascade's kwargs) or None"
                )
            result = normalise_kwargs(f"{inst.config.name} (its result)", result)
        except RetryRequested as req:
            depth = int(inst.metadata.get("depth", 0))
            limit = self.get_max_retries(context)
            if depth < limit:
                meta.update(req.metadata)
                if req.exc is not None:
                    meta.update(self._exception_meta(req.exc))
                manager.worker.retry(
                    inst.name, token, finish_meta(), req.replacement_kwargs, req.cooldown
                )
                return None
            exc = MaxRetriesExceeded(f"{inst.name} asked to retry beyond max_retries={limit}")
            exc.__cause__ = req.exc
            self._record_failure(manager, inst, token, context, exc, meta, finish_meta)
            return None
        except SkipRequested as req:
            meta.update(req.metadata)
            manager.worker.skip(inst.name, token, finish_meta())
            return None
        except Exception as exc:
            self._record_failure(manager, inst, token, context, exc, meta, finish_meta)
            raise
        manager.worker.finish(inst.name, token, result, finish_meta())
        return result

    def _record_failure(
        self,
        manager: TriggerManager,
        inst: TaskInstance,
        token: str,
        context: TaskContext,
        exc: BaseException,
        meta: dict[str, Any],
        finish_meta: Any,
    ) -> None:
        if not getattr(exc, "_triggers_logged", False):
            with context.get_logger_context() as log:
                log.error(
                    "%s failed: %s: %s",
                    inst.name,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                    extra={"context": dict(getattr(exc, "context", None) or {})},
                )
        meta.update(self._exception_meta(exc))
        manager.worker.fail(inst.name, token, finish_meta())
        exc._triggers_recorded = True  # type: ignore[attr-defined]

    _exception_meta = staticmethod(exception_meta)
