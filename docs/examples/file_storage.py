"""A storage backend that keeps each session in a JSON file.

It implements the two primitives only; fetching, transactions, inspection and
the rest come from BaseTriggerStorage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from triggers.storages import BaseTriggerStorage, storage_backends
from triggers.types import TaskConfig, TaskInstance


@storage_backends.register("json-file")
class JsonFileStorage(BaseTriggerStorage):
    name = "json-file"
    directory = Path(tempfile.gettempdir()) / "triggers-sessions"

    def _path(self) -> Path:
        # Session UIDs may contain any printable character; hash them.
        digest = hashlib.sha256(self.uid.encode()).hexdigest()
        return self.directory / f"{digest}.json"

    def _load_from_backend(
        self,
    ) -> tuple[dict[str, TaskConfig], dict[str, TaskInstance], dict[str, Any]]:
        try:
            data = json.loads(self._path().read_text())
        except FileNotFoundError:
            data = None  # a new session
        return self._deserialize(data)

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Write a new file and rename it over the old one, so a reader never
        # sees half a session.
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self._serialize(), handle)
        os.replace(tmp, self._path())
