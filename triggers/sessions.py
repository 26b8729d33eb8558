"""Which sessions the configured storage holds, by last activity, and
deleting them: what the inspector's session list and ``triggers_cleanup``
are built on.

.. code-block:: text

    from triggers.sessions import count_sessions, delete_session, list_sessions

    list_sessions(prefix="questionnaire:", limit=50)   # newest activity first
    count_sessions(prefix="questionnaire:")
    delete_session("questionnaire:42")                 # True if it existed

Everything works on the storage ``TRIGGERS['STORAGE']`` with
``TRIGGERS['STORAGE_OPTIONS']``, like
:func:`~triggers.shortcuts.get_trigger_manager`. A session's *last activity*
is the time of its last write (a fire, a status change, a configuration...),
recorded by the storage in the same step as the write itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import conf
from .exceptions import ConfigurationError
from .storages import BaseTriggerStorage, storage_backends
from .validation import check_uid

__all__ = ["SessionSummary", "count_sessions", "delete_session", "list_sessions"]


@dataclass(frozen=True)
class SessionSummary:
    """One stored session: its uid and when it was last written (aware UTC)."""

    uid: str
    last_activity: datetime


def _storage_class() -> tuple[type[BaseTriggerStorage], dict[str, Any]]:
    key = conf.get("STORAGE")
    try:
        cls = storage_backends.get_class(key)
    except KeyError as exc:
        raise ConfigurationError(
            f"TRIGGERS['STORAGE'] names no storage backend: {exc}", directive="STORAGE"
        ) from None
    return cls, dict(conf.get("STORAGE_OPTIONS") or {})


def _unsupported(cls: type[BaseTriggerStorage]) -> ConfigurationError:
    return ConfigurationError(
        f"storage backend {cls.__module__}.{cls.__qualname__} cannot list its sessions "
        "(it implements no list_sessions()/count_sessions())",
        directive="STORAGE",
    )


def _check_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"older_than must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"older_than must be an aware datetime (e.g. django.utils.timezone.now()), not {value}"
        )
    return value.astimezone(UTC)


def _check_count(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def list_sessions(
    *,
    prefix: str = "",
    offset: int = 0,
    limit: int | None = None,
    older_than: datetime | None = None,
) -> list[SessionSummary]:
    """Stored sessions, newest activity first.

    ``prefix`` keeps the uids that start with it; ``older_than`` (an aware
    datetime) the sessions last written before it; ``offset`` and ``limit``
    then page through the result. Raises
    :class:`~triggers.exceptions.ConfigurationError` if the storage backend
    keeps no session index.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, not {type(prefix).__name__}")
    _check_count("offset", offset, allow_none=False)
    _check_count("limit", limit, allow_none=True)
    cutoff = _check_time(older_than)
    cls, options = _storage_class()
    try:
        rows = cls.list_sessions(
            options, prefix=prefix, offset=offset, limit=limit, older_than=cutoff
        )
    except NotImplementedError:
        raise _unsupported(cls) from None
    return [SessionSummary(uid, when.astimezone(UTC)) for uid, when in rows]


def count_sessions(*, prefix: str = "") -> int:
    """How many sessions the storage holds whose uid starts with ``prefix``."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, not {type(prefix).__name__}")
    cls, options = _storage_class()
    try:
        return int(cls.count_sessions(options, prefix=prefix))
    except NotImplementedError:
        raise _unsupported(cls) from None


def delete_session(uid: str, *, idle_before: datetime | None = None) -> bool:
    """Delete session ``uid`` (all of its state) under its lock; ``True`` if
    there was one. With ``idle_before`` (an aware datetime), only if it was
    last written before then, checked atomically with the deletion."""
    cls, options = _storage_class()
    return cls(check_uid(uid), **options).delete(idle_before=_check_time(idle_before))
