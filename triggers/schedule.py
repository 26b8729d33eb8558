"""Time values of SPEC §14, apart from any I/O: checking a fire's ``delay``
or ``at``, an idempotency key and the ``deadline`` directive, and building
the plain timer records a session stores.

A *timer* is a fire that waits in the session until it is due::

    {"trigger": "remind", "due": "2026-01-08T09:00:00+00:00", "kwargs": {...}}

plus ``"instance"`` for a deadline timer (the instance it watches) and
``"manager"`` (the registry key of the manager that set it, so the sweeper
fires it through the same kind of manager). The engine and the
configuration checks import this module, so it imports nothing that does
I/O.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .exceptions import ConfigurationError, InvalidTriggerError, InvalidTriggerTypeError
from .validation import check_name

__all__ = [
    "DEADLINE",
    "aware_utc",
    "check_deadline",
    "check_idempotency_key",
    "deadline_of",
    "deadline_timer",
    "due_time",
    "from_iso",
    "new_timer_id",
    "timer_list",
    "timer_record",
]

#: The directive name (SPEC §14).
DEADLINE = "deadline"
#: Longest idempotency key accepted (it is stored per session).
MAX_KEY_LENGTH = 200
#: Longest delay accepted: about a hundred years (a typo, not a plan).
MAX_DELAY = 100 * 365 * 24 * 3600.0


def from_iso(text: str) -> datetime:
    """An aware UTC datetime from a timer's ``due`` text."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _seconds(trigger: str, delay: Any) -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidTriggerTypeError(
            f"delay for trigger {trigger!r} must be seconds (int or float) or a timedelta, "
            f"not {type(delay).__name__} ({delay!r:.60})"
        )
    else:
        seconds = float(delay)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DELAY:
        raise InvalidTriggerError(
            f"delay for trigger {trigger!r} must be a finite number of seconds >= 0 "
            f"(at most {MAX_DELAY:.0f}), not {delay!r}"
        )
    return seconds


def due_time(trigger: str, delay: Any, at: Any, now: datetime | None = None) -> datetime | None:
    """When a fire given ``delay`` or ``at`` is due (aware UTC), or ``None``
    for an immediate fire. Raises ``TypeError``/``ValueError`` (library
    subclasses) naming the trigger for a bad value or for both at once."""
    if delay is None and at is None:
        return None
    if delay is not None and at is not None:
        raise InvalidTriggerError(
            f"fire({trigger!r}) takes delay or at, not both (delay={delay!r}, at={at!r})"
        )
    now = now or datetime.now(UTC)
    if delay is not None:
        return now + timedelta(seconds=_seconds(trigger, delay))
    return aware_utc(at, f"at for trigger {trigger!r}")


def aware_utc(value: Any, what: str) -> datetime:
    """``value`` in UTC if it is an aware datetime; ``what`` names it in the
    ``TypeError``/``ValueError`` (library subclasses) raised otherwise: a
    naive one would mean a different moment on every server."""
    if not isinstance(value, datetime):
        raise InvalidTriggerTypeError(
            f"{what} must be an aware datetime, not {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTriggerError(
            f"{what} must be an aware datetime "
            f"(e.g. django.utils.timezone.now() + timedelta(days=7)), not the naive {value}"
        )
    return value.astimezone(UTC)


def check_idempotency_key(trigger: str, key: Any) -> str | None:
    """``key`` if it is an acceptable idempotency key (``None`` passes)."""
    if key is None:
        return None
    try:
        return check_name(key, "idempotency key", max_length=MAX_KEY_LENGTH)
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise type(exc)(f"fire({trigger!r}): {exc}") from None


def new_timer_id() -> str:
    return uuid.uuid4().hex


def timer_record(
    trigger: str,
    due: datetime,
    kwargs: Mapping[str, Any],
    *,
    instance: str | None = None,
    manager: str | None = None,
) -> dict[str, Any]:
    """The plain record a session stores for one pending timer."""
    record: dict[str, Any] = {
        "trigger": trigger,
        "due": due.astimezone(UTC).isoformat(),
        "kwargs": dict(kwargs),
    }
    if instance is not None:
        record["instance"] = instance
    if manager is not None:
        record["manager"] = manager
    return record


# -- the deadline directive --------------------------------------------------------


def check_deadline(task: str, value: Any) -> dict[str, Any]:
    """Validate a ``deadline`` directive (``{"seconds": N, "fire": name}``);
    raises :class:`ConfigurationError` naming the task, the directive and
    the fix."""
    example = '{"seconds": 604800, "fire": "reminderDue"}'
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"must be a mapping like {example}, not {type(value).__name__}",
            task=task,
            directive=DEADLINE,
        )
    unknown = sorted(set(value) - {"seconds", "fire"})
    if unknown or "seconds" not in value or "fire" not in value:
        what = f"unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "missing keys"
        raise ConfigurationError(
            f"takes exactly the keys 'seconds' and 'fire' ({what}); write it like {example}",
            task=task,
            directive=DEADLINE,
        )
    seconds = value["seconds"]
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
        or seconds > MAX_DELAY
    ):
        raise ConfigurationError(
            f"'seconds' must be a positive number of seconds (at most {MAX_DELAY:.0f}), "
            f"not {seconds!r}",
            task=task,
            directive=DEADLINE,
        )
    try:
        check_name(value["fire"], "trigger name")
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        raise ConfigurationError(
            f"'fire' must name the trigger to fire when the deadline passes: {exc}",
            task=task,
            directive=DEADLINE,
        ) from None
    return {"seconds": seconds, "fire": value["fire"]}


def deadline_of(config: Any) -> dict[str, Any] | None:
    """The ``deadline`` directive of a task config (``None`` if it has none)."""
    value = getattr(config, "deadline", None)
    if value is None:
        value = (getattr(config, "extras", None) or {}).get(DEADLINE)
    return dict(value) if isinstance(value, Mapping) else None


def deadline_timer(
    config: Any, instance: str, now: datetime | None = None
) -> dict[str, Any] | None:
    """The timer a new instance of ``config`` sets, if the task has a
    deadline: due ``seconds`` after ``now``, firing the directive's trigger
    with ``{"instance": <name>}`` if the instance is still unstarted."""
    deadline = deadline_of(config)
    if deadline is None:
        return None
    due = (now or datetime.now(UTC)) + timedelta(seconds=float(deadline["seconds"]))
    return timer_record(deadline["fire"], due, {"instance": instance}, instance=instance)


def timer_list(timers: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A session's timers as ``storage.timers`` shows them: plain dicts
    (``id``, ``trigger``, ``due``, ``kwargs``, and ``instance`` for a
    deadline), earliest first."""
    shown = []
    for timer_id, timer in timers.items():
        item = {
            "id": timer_id,
            "trigger": timer["trigger"],
            "due": timer["due"],
            "kwargs": dict(timer.get("kwargs") or {}),
        }
        if timer.get("instance"):
            item["instance"] = timer["instance"]
        shown.append(item)
    return sorted(shown, key=lambda t: (from_iso(t["due"]), t["id"]))
