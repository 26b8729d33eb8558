"""The message a runner sends a worker, checked before anything in it is used.

Anyone who can write to the broker can forge a message, so a worker reads
one only through :func:`read_message`: exactly the keys this library writes,
each of the expected type, names that pass the library's own name checks,
and manager/storage keys that resolve to registered (or already imported)
subclasses of the right base class. Nothing named in a message is imported
or called before that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .exceptions import (
    InvalidMessageError,
    InvalidTriggerError,
    InvalidTriggerTypeError,
    LockLostError,
    LockTimeoutError,
    SessionTimeoutError,
)
from .validation import check_json_tree, check_name, check_uid

__all__ = ["WorkerMessage", "is_transient", "read_message"]

logger = logging.getLogger(__name__)

#: Keys a runner message may hold (``build_message`` writes them).
REQUIRED = ("uid", "instance", "manager", "storage", "storage_kwargs")
OPTIONAL = ("manager_fallbacks", "attempt")

#: Errors that say the session could not be reached for now: worth retrying.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    LockTimeoutError,
    LockLostError,
    SessionTimeoutError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


@dataclass
class WorkerMessage:
    uid: str
    instance: str
    manager: str
    storage: str
    storage_kwargs: dict[str, Any]
    manager_fallbacks: list[str] = field(default_factory=list)
    attempt: int = 0

    def as_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "uid": self.uid,
            "instance": self.instance,
            "manager": self.manager,
            "storage": self.storage,
            "storage_kwargs": dict(self.storage_kwargs),
        }
        if self.manager_fallbacks:
            message["manager_fallbacks"] = list(self.manager_fallbacks)
        if self.attempt:
            message["attempt"] = self.attempt
        return message


def _refuse(reason: str) -> InvalidMessageError:
    return InvalidMessageError(f"refusing a task message this library did not write: {reason}")


def _registry_key(value: Any, what: str) -> str:
    # What it names is checked by the registry, which builds nothing but
    # registered or already imported subclasses of its base class.
    if not isinstance(value, str) or not value or len(value) > 300:
        raise _refuse(f"{what} must be a registry key or dotted path, not {value!r:.80}")
    return value


def read_message(message: Any) -> WorkerMessage:
    """Check a runner message's shape (not yet its classes: see
    :func:`rebuild_storage`); raises :class:`InvalidMessageError`."""
    if not isinstance(message, Mapping):
        raise _refuse(f"expected a mapping, got {type(message).__name__}")
    unknown = sorted(str(k) for k in message if k not in REQUIRED + OPTIONAL)
    if unknown:
        raise _refuse(f"unknown keys {', '.join(map(repr, unknown))}")
    missing = [k for k in REQUIRED if k not in message]
    if missing:
        raise _refuse(f"missing keys {', '.join(map(repr, missing))}")
    try:
        uid = check_uid(message["uid"])
        instance = check_name(message["instance"], "task instance name", max_length=250)
        storage_kwargs = message["storage_kwargs"]
        if not isinstance(storage_kwargs, Mapping):
            raise InvalidTriggerTypeError("storage_kwargs must be a mapping")
        check_json_tree("storage_kwargs", storage_kwargs, 8)
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise _refuse(str(exc)) from None
    if "#" not in instance:
        raise _refuse(f"{instance!r} is not an instance name (<task>#<n>)")
    fallbacks = message.get("manager_fallbacks") or []
    if not isinstance(fallbacks, list) or len(fallbacks) > 32:
        raise _refuse("manager_fallbacks must be a short list of registry keys")
    attempt = message.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt <= 100:
        raise _refuse(f"attempt must be a small non-negative integer, not {attempt!r:.40}")
    return WorkerMessage(
        uid=uid,
        instance=instance,
        manager=_registry_key(message["manager"], "manager"),
        storage=_registry_key(message["storage"], "storage"),
        storage_kwargs=dict(storage_kwargs),
        manager_fallbacks=[_registry_key(k, "manager fallback") for k in fallbacks],
        attempt=attempt,
    )


def rebuild_storage(msg: WorkerMessage) -> Any:
    """The storage backend the message names, built for its session (only a
    registered or already imported subclass of ``BaseTriggerStorage``)."""
    from .storages import storage_backends

    try:
        cls = storage_backends.get_class(msg.storage, load_modules=False)
    except KeyError as exc:
        raise _refuse(f"storage: {exc.args[0] if exc.args else exc}") from None
    return cls(msg.uid, **msg.storage_kwargs)


def manager_class(msg: WorkerMessage) -> type:
    """The manager class the message names, else its nearest registered
    ancestor (with a WARNING); ``KeyError`` naming the class if neither."""
    from .manager import trigger_managers

    try:
        return trigger_managers.get_class_or_fallback(msg.manager, msg.manager_fallbacks)
    except KeyError as exc:
        raise KeyError(
            f"cannot rebuild the trigger manager {msg.manager!r} for {msg.instance} in "
            f"session {msg.uid!r}: {exc.args[0] if exc.args else exc}; register it "
            "(triggers.manager.trigger_managers.register) in a module the worker imports"
        ) from None
