"""The default runner on a real Celery worker process and a real broker."""

from __future__ import annotations

from tests.utils import wait_for
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance


def status_of(manager: TriggerManager, name: str) -> str | None:
    instances = manager.storage.instances
    return instances[name].status if name in instances else None


def test_workflow_runs_on_a_real_worker_and_cascades(celery_worker, unique_uid):
    # Given a two-step workflow whose second task waits for the first's cascade
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": "triggers.testing.PassThruTask"},
            "t_second": {"after": ["t_first"], "run": "triggers.testing.PassThruTask"},
        }
    )
    # When the trigger fires in this process
    scheduled = manager.fire("start", {"n": 1})
    assert [i.name for i in scheduled] == ["t_first#0"]
    # Then the worker runs both, and the same manager object sees the result
    wait_for(lambda: status_of(manager, "t_second#0") == TaskInstance.STATUS_FINISHED, timeout=20)
    first = manager.storage["t_first#0"]
    assert first.status == TaskInstance.STATUS_FINISHED
    assert first.metadata["result"] == {"kwargs": {"start": {"n": 1}}}
    second = manager.storage["t_second#0"]
    assert second.metadata["kwargs"] == {"t_first": {"kwargs": {"start": {"n": 1}}}}
