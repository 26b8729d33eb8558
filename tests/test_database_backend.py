"""The database storage backend (PostgreSQL): configuration errors, what a
fire reads, lock timeouts, crashed lock holders, rebuilt workers."""

from __future__ import annotations

import pytest

from tests.contract_backends import DEV, PASS, new_uid, settle, threaded_fixture  # noqa: F401
from triggers.manager import TriggerManager
from triggers.storages.database import DatabaseStorageBackend

pytestmark = pytest.mark.postgres


def test_smoke(threaded) -> None:
    manager = TriggerManager(DatabaseStorageBackend(new_uid("db"), database="postgres"))
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["t_a", "y"], "run": DEV}}
    )
    manager.fire("x", {"n": 1})
    settle()
    manager.fire("y")
    settle()
    assert {n: i.status for n, i in manager.storage.instances.items()} == {
        "t_a#0": "finished",
        "t_b#0": "finished",
    }
