"""Distributed observer pattern for Django + Celery: fire named triggers for a
session from any process, run Celery tasks once the right set has fired."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["get_trigger_manager", "start_session"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. from settings) needs no Django setup.
    if name in ("get_trigger_manager", "start_session"):
        from . import shortcuts

        return getattr(shortcuts, name)
    raise AttributeError(f"module 'triggers' has no attribute {name!r}")
