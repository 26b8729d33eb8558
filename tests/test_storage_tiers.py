"""The two storage tiers on every backend: ``triggers.testing.contract``'s
suites (the tests a third-party backend runs too) on Django's RedisCache,
django-redis, the database backend (indexed tier), a LocMem cache and the
SQLite document-tier example of docs/storages.rst (document tier) and its
indexed-tier example; and the document-tier example raced by real
processes, keeping exactly-once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.contract_backends import (
    RecordingTask,
    make_storage,
    new_uid,
    sqlite_example,
    sqlite_indexed_example,
)
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.document import DocumentStorage
from triggers.testing.contract import DocumentStorageContractTests, StorageContractTests

ROOT = Path(__file__).resolve().parent.parent
RECORDING = RecordingTask.name


class TestBuiltinRedisContract(StorageContractTests):
    def make_storage(self, uid: str) -> BaseTriggerStorage:
        return make_storage("builtin-redis", uid)


class TestDjangoRedisContract(StorageContractTests):
    def make_storage(self, uid: str) -> BaseTriggerStorage:
        return make_storage("django-redis", uid)


@pytest.mark.postgres
class TestDatabaseContract(StorageContractTests):
    def make_storage(self, uid: str) -> BaseTriggerStorage:
        return make_storage("database", uid)


class TestLocMemDocumentContract(DocumentStorageContractTests):
    def make_storage(self, uid: str) -> DocumentStorage:
        storage = make_storage("locmem", uid)
        assert isinstance(storage, DocumentStorage)
        return storage


class TestSQLiteExampleContract(DocumentStorageContractTests):
    """The document-tier example of docs/storages.rst."""

    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "sessions.sqlite3")

    def make_storage(self, uid: str) -> DocumentStorage:
        storage: DocumentStorage = sqlite_example().SQLiteDocumentStorage(uid, path=self.path)
        return storage


class TestSQLiteIndexedExampleContract(StorageContractTests):
    """The indexed-tier example of docs/storages.rst."""

    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "indexed.sqlite3")

    def make_storage(self, uid: str) -> BaseTriggerStorage:
        storage: BaseTriggerStorage = sqlite_indexed_example().SQLiteIndexedStorage(
            uid, path=self.path
        )
        return storage


def test_the_document_example_keeps_exactly_once_across_racing_processes(
    tmp_path: Path,
) -> None:
    # Given a session in the example's SQLite file: a task per trigger of
    # three processes and one task after all of them
    racers, fires = 3, 8
    path, log = str(tmp_path / "sessions.sqlite3"), tmp_path / "ran.log"
    names = [f"p{r}_{i}" for r in range(racers) for i in range(fires)]
    workflow: dict[str, Any] = {f"t_{n}": {"after": [n], "run": RECORDING} for n in names}
    workflow["t_all"] = {"after": names, "run": RECORDING}
    uid = new_uid("race")
    TriggerManager(sqlite_example().SQLiteDocumentStorage(uid, path=path)).update_configuration(
        workflow
    )
    # When three real processes fire their triggers at the same moment,
    # each running the tasks it made ready
    env = {**os.environ, "TRIGGERS_TEST_RUN_LOG": str(log)}
    start_at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.contract_racer", path, uid, str(r), str(fires), start_at],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(racers)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    # Then every instance was created and ran exactly once: nothing lost,
    # nothing doubled, whoever won each race
    ran = log.read_text().split()
    expected = sorted([f"t_{n}#0" for n in names] + ["t_all#0"])
    assert sorted(ran) == expected
    instances = sqlite_example().SQLiteDocumentStorage(uid, path=path).instances
    assert sorted(instances) == expected
    assert {i.status for i in instances.values()} == {"finished"}


def test_a_document_conflict_is_retried_like_a_wait_for_the_lock(settings: Any) -> None:
    # Given a document-tier session whose writes lose the race five times in
    # a row (more than the three attempts a lost lock gets), well within
    # TRIGGERS['LOCK_TIMEOUT']
    settings.TRIGGERS = {**settings.TRIGGERS, "LOCK_TIMEOUT": 30}
    storage = make_storage("locmem", new_uid("conflicts"))
    manager = TriggerManager(storage)
    manager.update_configuration({"t_a": {"after": ["a", "b"], "run": RECORDING}})
    real_write, losses = storage.write, [5]

    def contested_write(document: Any, expected_version: Any) -> bool:
        if losses[0]:
            losses[0] -= 1
            return False  # another process wrote first
        return bool(real_write(document, expected_version))

    storage.write = contested_write  # type: ignore[method-assign]
    # When a trigger fires
    manager.fire("a", {"n": 1})
    # Then the fire went through once the conflicts stopped, written once
    assert losses == [0]
    assert storage["t_a#0"].kwargs == {"a": {"n": 1}}
    assert storage["t_a#0"].status == "unstarted"
