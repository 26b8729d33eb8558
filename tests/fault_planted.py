"""A module no worker message may make a process import (the forged-message
tests, tests/test_faults_worker.py). Importing it leaves a marker file, and
calling what it defines leaves another; nothing in the library or the test
suite imports it."""

from __future__ import annotations

import os
from pathlib import Path

from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend

MARKER_ENV = "TRIGGERS_PLANTED_MARKER"


def _mark(suffix: str) -> None:
    base = os.environ.get(MARKER_ENV)
    if base:
        Path(base + suffix).write_text("this must never happen")


_mark(".imported")


class PlantedManager(TriggerManager):
    """A real TriggerManager subclass, so only the import itself is refused."""


class PlantedStorage(CacheStorageBackend):
    def __init__(self, *args: object, **kwargs: object) -> None:
        _mark(".called")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def explode(*args: object, **kwargs: object) -> None:
    _mark(".called")
