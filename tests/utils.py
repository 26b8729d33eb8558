"""Helpers shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Poll ``predicate()`` until it returns something truthy and return that.

    Tests wait on a condition, never on a fixed sleep. Raises AssertionError
    (with ``message``) if the condition does not hold within ``timeout``
    seconds; the predicate is always tried at least once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"Timed out after {timeout:g}s waiting for: {what}")
        time.sleep(interval)
