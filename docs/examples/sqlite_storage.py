"""A document-tier storage backend: each session is one row of an SQLite
table, written back only if its version is still the one that was read.

Two methods, and it is safe for several processes sharing the file:
``write`` is one ``UPDATE ... WHERE version = ?`` (or an ``INSERT`` that
only succeeds while the row is absent), which SQLite runs atomically.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from triggers.storages import DocumentStorage, storage_backends

DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "triggers-sessions.sqlite3")

SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers_document (
    uid TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    document TEXT NOT NULL
)
"""


@storage_backends.register("sqlite-document")
class SQLiteDocumentStorage(DocumentStorage):
    name = "sqlite-document"

    def __init__(self, uid: str, path: str = DEFAULT_PATH) -> None:
        super().__init__(uid)
        self.path = path

    def get_init_kwargs(self) -> dict[str, Any]:
        return {"path": self.path}  # so a worker opens the same file

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: every statement is its own transaction.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute(SCHEMA)
        return db

    def read(self) -> tuple[dict[str, Any] | None, int]:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT document, version FROM triggers_document WHERE uid = ?", (self.uid,)
            ).fetchone()
        if row is None:
            return None, 0  # version 0: "no row"
        return json.loads(row[0]), row[1]

    def write(self, document: dict[str, Any] | None, expected_version: int) -> bool:
        with closing(self._connect()) as db:
            if document is None:
                cursor = db.execute(
                    "DELETE FROM triggers_document WHERE uid = ? AND version = ?",
                    (self.uid, expected_version),
                )
            elif expected_version == 0:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO triggers_document VALUES (?, 1, ?)",
                    (self.uid, json.dumps(document)),
                )
            else:
                cursor = db.execute(
                    "UPDATE triggers_document SET document = ?, version = version + 1"
                    " WHERE uid = ? AND version = ?",
                    (json.dumps(document), self.uid, expected_version),
                )
        return cursor.rowcount == 1
