"""Which sessions exist, newest activity first, for the inspector's list page:
a page of :func:`triggers.sessions.list_sessions`; when the configured
storage backend keeps no session index, the list page says why and offers to
open a session by its UID."""

from __future__ import annotations

from dataclasses import dataclass

from .. import sessions
from ..exceptions import ConfigurationError

__all__ = ["SessionPage", "list_sessions"]


@dataclass(frozen=True)
class SessionPage:
    rows: list[sessions.SessionSummary]
    total: int
    #: Why the storage cannot list its sessions ("" when it can).
    unavailable: str = ""


def list_sessions(prefix: str = "", offset: int = 0, limit: int = 50) -> SessionPage:
    """One page of sessions whose uid starts with ``prefix``, newest activity
    first (empty, with the reason, if the storage cannot list them)."""
    try:
        rows = sessions.list_sessions(prefix=prefix, offset=offset, limit=limit)
        total = sessions.count_sessions(prefix=prefix)
    except ConfigurationError as exc:
        return SessionPage([], 0, str(exc))
    return SessionPage(rows, total)
