"""A trigger manager that keeps an audit trail through the hooks."""

from __future__ import annotations

import logging

from triggers.manager import TriggerManager, trigger_managers
from triggers.types import TaskInstance

logger = logging.getLogger(__name__)

#: Stands in for an audit table; hooks run in whichever process did the
#: operation (a web process for fires, a worker for cascades).
audit_log: list[str] = []


@trigger_managers.register("audited")
class AuditedTriggerManager(TriggerManager):
    # The registry key; workers rebuild the manager of a task from it.
    name = "audited"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        scheduled = ", ".join(i.name for i in tasks_scheduled) or "nothing"
        audit_log.append(f"{self.storage.uid}: {trigger_name} -> {scheduled}")

    def _post_replay(self, task_instance: TaskInstance) -> None:
        parent = task_instance.metadata["parent"]
        audit_log.append(f"{self.storage.uid}: replayed {parent} as {task_instance.name}")

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        how = "with cascade" if cascade else "without cascade"
        audit_log.append(f"{self.storage.uid}: skipped {task_instance.name} {how}")
