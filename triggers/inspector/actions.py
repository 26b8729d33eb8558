"""What the inspector's buttons do: replay, skip, resend, fire.

Each action reads its form, runs one :class:`~triggers.manager.TriggerManager`
method and records who did it in the metadata of the instance it acted on
(``metadata['inspector'] = {'action', 'user', 'at', ...}``) and in the
``triggers.inspector`` log. Bad input (malformed JSON, a missing field)
raises :class:`FormError` before anything is touched; what the library
refuses reaches the page as its own error message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..exceptions import TriggersError
from ..manager import TriggerManager

__all__ = ["ACTIONS", "FormError", "run_action"]

logger = logging.getLogger("triggers.inspector")


class FormError(ValueError):
    """The submitted form is unusable; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass
class Outcome:
    message: str
    #: Instances to stamp with the action (the one acted on first).
    instances: list[str]
    details: dict[str, Any]


def _json_object(data: Mapping[str, str], field: str, *, required: bool = False) -> Any:
    text = (data.get(field) or "").strip()
    if not text:
        if required:
            raise FormError(field, "enter a JSON object, e.g. {}")
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormError(
            field, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise FormError(field, f"must be a JSON object, not {type(value).__name__}")
    return value


def _instance(data: Mapping[str, str]) -> str:
    name = (data.get("instance") or "").strip()
    if not name:
        raise FormError("instance", "no task instance given")
    return name


def _replay(manager: TriggerManager, data: Mapping[str, str]) -> Outcome:
    name = _instance(data)
    replacement = _json_object(data, "kwargs")
    clone = manager.replay_failed_instance(name, replacement)
    extra = " with new kwargs" if replacement is not None else ""
    return Outcome(
        f"Replayed {name} as {clone.name}{extra} ({clone.status}).",
        [name],
        {"clone": clone.name, "replacement_kwargs": replacement},
    )


def _skip(manager: TriggerManager, data: Mapping[str, str]) -> Outcome:
    name = _instance(data)
    cascade = data.get("cascade") in ("1", "on", "true", "yes")
    result = _json_object(data, "result") if cascade else None
    manager.skip_failed_instance(name, cascade=cascade, result=result)
    how = "; fired its task's name (cascade)" if cascade else ""
    return Outcome(f"Skipped {name}{how}.", [name], {"cascade": cascade})


def _resend(manager: TriggerManager, data: Mapping[str, str]) -> Outcome:
    name = _instance(data)
    inst = manager.resend_instance(name)
    sent = inst.status == "scheduled"
    state = (
        "sent to its runner again" if sent else f"not sent ({inst.metadata.get('dispatch_error')})"
    )
    return Outcome(f"{name}: {state}.", [name], {})


def _fire(manager: TriggerManager, data: Mapping[str, str]) -> Outcome:
    trigger = (data.get("trigger") or "").strip()
    if not trigger:
        raise FormError("trigger", "enter the name of the trigger to fire")
    kwargs = _json_object(data, "kwargs") or {}
    scheduled = manager.fire(trigger, kwargs)
    names = [inst.name for inst in scheduled]
    what = f"scheduled {', '.join(names)}" if names else "no instance became ready"
    return Outcome(f"Fired {trigger}: {what}.", names, {"trigger": trigger})


ACTIONS: dict[str, Callable[[TriggerManager, Mapping[str, str]], Outcome]] = {
    "replay": _replay,
    "skip": _skip,
    "resend": _resend,
    "fire": _fire,
}


def run_action(manager: TriggerManager, action: str, data: Mapping[str, str], user: str) -> str:
    """Run ``action`` with the form ``data`` on behalf of ``user``; return the
    message to show. Raises :class:`FormError` for bad input and whatever the
    manager raises when it refuses."""
    try:
        handler = ACTIONS[action]
    except KeyError:
        raise FormError("action", f"unknown action {action!r}") from None
    outcome = handler(manager, data)
    stamp = {"action": action, "user": user, "at": datetime.now(UTC).isoformat()}
    stamp.update({k: v for k, v in outcome.details.items() if v is not None})
    logger.info(
        "inspector: %s %s in session %r: %s", user, action, manager.storage.uid, outcome.message
    )
    message = outcome.message
    for name in outcome.instances:
        try:
            manager.update_instance_metadata(name, {"inspector": stamp})
        except TriggersError as exc:
            # The action itself happened; say so, and that the stamp is missing.
            logger.warning("inspector: could not record %s on %s: %s", action, name, exc)
            message += f" (Could not record who did it on {name}: {exc}.)"
    return message
