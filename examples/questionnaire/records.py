"""What happened, kept in Redis: the tasks record what they imported (the
demo's stand-in for a database) and the firing processes record each fire.
The demo reads both back to print the timeline and to check the outcome."""

from __future__ import annotations

import json
import os
import time
from functools import cache
from typing import Any

import redis
from django.conf import settings


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(f"{settings.REDIS_URL}/{settings.REDIS_DB}")


def _key() -> str:
    return f"{settings.KEY_PREFIX}:timeline"


def add(kind: str, uid: str, actor: str, t: float | None = None, **data: Any) -> None:
    """Append one event (``kind`` is ``fire``, ``start`` or ``import``) that
    happened at ``t`` (default: now)."""
    when = time.time() if t is None else t
    event = {"t": when, "kind": kind, "uid": uid, "actor": actor, "pid": os.getpid()}
    event.update(data)
    client().rpush(_key(), json.dumps(event))


def events() -> list[dict[str, Any]]:
    """Every event so far, oldest first."""
    found = [json.loads(raw) for raw in client().lrange(_key(), 0, -1)]
    return sorted(found, key=lambda event: event["t"])


def imported(uid: str) -> list[dict[str, Any]]:
    """What the tasks imported for one session."""
    return [e for e in events() if e["kind"] == "import" and e["uid"] == uid]
