"""One tree of exceptions: every error this library raises on purpose derives
from :class:`TriggersError`, and also from the builtin a caller would expect
(``ValueError``, ``TypeError``, ``KeyError``) so plain ``except`` clauses work."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "ConfigurationError",
    "DispatchError",
    "InstanceStateError",
    "InvalidMessageError",
    "InvalidTriggerError",
    "InvalidTriggerTypeError",
    "KwargsValidationError",
    "LockLostError",
    "LockTimeoutError",
    "MaxRetriesExceeded",
    "NotLockedError",
    "RetryRequested",
    "SessionLostError",
    "SessionNotConfiguredError",
    "SessionTimeoutError",
    "SkipRequested",
    "TaskResultError",
    "TriggersError",
    "UnknownInstanceError",
    "UnknownWorkflowError",
    "WriteConflictError",
    "WorkflowFileError",
    "with_context",
]

E = TypeVar("E", bound=BaseException)


class TriggersError(Exception):
    """Root of every exception raised by ``triggers``."""


class ConfigurationError(TriggersError, ValueError):
    """A task configuration (or the ``TRIGGERS`` setting) is invalid.

    ``task`` and ``directive`` name the offending part; ``suggestion`` holds
    the directive the user probably meant, for typos.
    """

    def __init__(
        self,
        message: str,
        *,
        task: str | None = None,
        directive: str | None = None,
        suggestion: str | None = None,
        workflow: str | None = None,
    ) -> None:
        self.task = task
        self.directive = directive
        self.suggestion = suggestion
        self.workflow = workflow
        parts = []
        if workflow is not None:
            parts.append(f"workflow {workflow!r}")
        if task is not None:
            parts.append(f"task {task!r}")
        if directive is not None:
            parts.append(f"directive {directive!r}")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if suggestion:
            text += f" (did you mean {suggestion!r}?)"
        self.message = message
        super().__init__(text)

    def in_workflow(self, workflow: str) -> ConfigurationError:
        """A copy of this error that also names the workflow it came from."""
        return ConfigurationError(
            self.message,
            task=self.task,
            directive=self.directive,
            suggestion=self.suggestion,
            workflow=workflow,
        )


class InvalidTriggerError(TriggersError, ValueError):
    """A trigger name, session UID or trigger kwargs value is not acceptable."""


class InvalidTriggerTypeError(TriggersError, TypeError):
    """A trigger name, session UID or trigger kwargs has the wrong type."""


class UnknownInstanceError(TriggersError, KeyError):
    """No task instance with this name exists in the session."""

    def __init__(self, name: str, uid: str | None = None) -> None:
        self.name = name
        self.uid = uid
        super().__init__(name)

    def __str__(self) -> str:
        where = f" in session {self.uid!r}" if self.uid is not None else ""
        return f"no task instance named {self.name!r}{where}"


class InstanceStateError(TriggersError, ValueError):
    """The instance is not in a status that allows the requested operation."""

    def __init__(self, name: str, status: str, wanted: str) -> None:
        self.name = name
        self.status = status
        super().__init__(f"task instance {name!r} is {status!r}; {wanted}")


class LockTimeoutError(TriggersError):
    """The session lock could not be acquired in time."""

    def __init__(self, uid: str, waited: float) -> None:
        self.uid = uid
        self.waited = waited
        super().__init__(f"could not lock session {uid!r} within {waited:.1f}s")


class LockLostError(TriggersError):
    """The session lock expired before the changes were written; nothing was
    written."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        super().__init__(
            f"lost the lock on session {uid!r} before committing; no change was written"
        )


class WriteConflictError(LockLostError):
    """A document-tier backend found the session written by someone else
    since it was read (its version changed); nothing was written. The
    manager runs the operation again, like after a lost lock."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        TriggersError.__init__(
            self,
            f"session {uid!r} was written by another process since it was read; "
            "no change was written (run the operation again)",
        )


class SessionLostError(TriggersError):
    """The session's state vanished from the cache (eviction, expiry or a Redis
    restart without persistence): all of it, seen by a storage object that
    knew the session, or part of it (``missing`` says which), seen by any."""

    def __init__(self, uid: str, missing: str | None = None) -> None:
        self.uid = uid
        self.missing = missing
        what = f"the state of session {uid!r}"
        if missing:
            what = f"part of {what} ({missing})"
        super().__init__(
            f"{what} has vanished from the cache "
            "(evicted, expired or Redis restarted); refusing to start it over"
        )


class DispatchError(TriggersError):
    """Some ready instances could not be handed to their runner (e.g. the broker
    is down). The trigger itself was recorded; the instances stay unstarted
    and ready, and ``TriggerManager.resend_ready_instances()`` sends them."""

    def __init__(self, uid: str, failures: Mapping[str, BaseException]) -> None:
        self.uid = uid
        self.failures = dict(failures)
        names = ", ".join(sorted(self.failures))
        first = next(iter(self.failures.values()))
        #: The broker the runner tried (password masked), if it said.
        self.broker_url: str | None = getattr(first, "broker_url", None)
        via = f" via broker {self.broker_url}" if self.broker_url else ""
        super().__init__(
            f"session {uid!r}: could not dispatch {names}{via} "
            f"({type(first).__name__}: {first}); they stay ready and can be re-sent"
        )


class SessionNotConfiguredError(TriggersError, LookupError):
    """A trigger was fired into a session that has no configuration (a typo in
    the UID, or state lost in a Redis restart) while
    ``TRIGGERS['ON_UNCONFIGURED']`` is ``'raise'``; nothing was stored."""

    def __init__(self, uid: str, trigger: str) -> None:
        self.uid = uid
        self.trigger = trigger
        super().__init__(
            f"session {uid!r} has no configuration; not recording trigger {trigger!r} "
            "(TRIGGERS['ON_UNCONFIGURED'] is 'raise')"
        )


class SessionTimeoutError(TriggersError, TimeoutError):
    """A session operation did not get an answer from its backend in time
    (``TRIGGERS['REDIS_TIMEOUT']`` per call, ``TRIGGERS['OPERATION_TIMEOUT']``
    in all). Its changes are written whole or not at all: a write that timed
    out is either applied entirely or not at all, never in part."""

    def __init__(self, uid: str, waited: float, detail: str = "") -> None:
        self.uid = uid
        self.waited = waited
        more = f": {detail}" if detail else ""
        super().__init__(
            f"session {uid!r}: no answer from the storage backend within {waited:.1f}s{more}"
        )


class InvalidMessageError(TriggersError, ValueError):
    """A worker received a task message this library did not write (unknown
    keys, wrong types, or a class that is not a registered subclass of the
    expected base); it was refused before anything named in it was loaded."""


def with_context(exc: E, context: Mapping[str, Any] | None) -> E:
    """Attach ``context`` to ``exc`` (merged over any context already there)
    and return the exception, so ``raise with_context(ValueError(...), {...})``
    reads naturally. The context is stored with the failed instance and logged
    with the exception."""
    existing = getattr(exc, "context", None)
    merged: dict[str, Any] = dict(existing) if isinstance(existing, Mapping) else {}
    if context:
        merged.update(context)
    exc.context = merged  # type: ignore[attr-defined]
    return exc


class NotLockedError(TriggersError, RuntimeError):
    """An operation that only makes sense while the session lock is held
    (``storage.save()``) was called outside ``with storage.acquire_lock()``."""


class LockHeldError(TriggersError, RuntimeError):
    """An operation that takes the session lock and ends with it
    (``storage.delete()``) was called inside a block that already holds it
    (``transaction()``/``acquire_lock()``); call it after the block."""


# -- raised by tasks (``triggers.task``) ---------------------------------------
# Stored instances record a failure's class as ``exc_type``/``exc_mro``, and
# operators match on those names: these keep the module they were first
# published in (``triggers.task``, which re-exports them).


class MaxRetriesExceeded(TriggersError):
    """A task asked to retry more often than its ``max_retries`` allows."""

    __module__ = "triggers.task"


class TaskResultError(TriggersError, TypeError):
    """``_run`` returned something other than a mapping or ``None``."""

    __module__ = "triggers.task"


class KwargsValidationError(TriggersError, ValueError):
    """``context.filter_kwargs`` rejected the trigger kwargs."""

    __module__ = "triggers.task"

    def __init__(self, task: str, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        super().__init__(f"invalid trigger kwargs for {task}: {self.errors}")


class RetryRequested(Exception):
    """Raised (via ``raise self.retry(...)``) to run the instance again."""

    def __init__(
        self,
        exc: BaseException | None,
        metadata: Mapping[str, Any] | None,
        replacement_kwargs: Mapping[str, Any] | None,
        cooldown: float | None,
    ) -> None:
        self.exc = exc
        self.metadata = dict(metadata or {})
        self.replacement_kwargs = replacement_kwargs
        self.cooldown = cooldown
        super().__init__(f"retry requested ({exc!r})")


class SkipRequested(Exception):
    """Raised (via ``raise self.skip(...)``) to mark the instance skipped."""

    def __init__(self, metadata: Mapping[str, Any] | None) -> None:
        self.metadata = dict(metadata or {})
        super().__init__("skip requested")


# -- workflows -------------------------------------------------------------------


class WorkflowFileError(ConfigurationError):
    """A workflow file cannot be read, is not JSON, or holds no JSON object."""

    def __init__(self, message: str, *, path: str, workflow: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}", workflow=workflow)


class UnknownWorkflowError(ConfigurationError):
    """No workflow of that name is declared in ``TRIGGERS['WORKFLOWS']``."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        close = difflib.get_close_matches(name, known, n=1)
        listed = ", ".join(repr(k) for k in known) or "none"
        super().__init__(
            f"no workflow named {name!r} in TRIGGERS['WORKFLOWS'] (declared: {listed})",
            suggestion=close[0] if close else None,
        )
