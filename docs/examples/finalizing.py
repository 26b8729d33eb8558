"""Ending a session: archive it from a last task, then delete it."""

from __future__ import annotations

import json
from typing import Any

from django.core.cache import caches

from triggers.manager import TriggerManager
from triggers.task import TaskContext, TriggerTask
from triggers.types import TaskInstance


class ArchiveSession(TriggerTask):
    """Keeps a copy of the whole session where reports can find it."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        snapshot = context.manager.storage.debug_repr()
        # A real application would save a model instance here.
        caches["default"].set(f"archive:{snapshot['uid']}", json.dumps(snapshot), None)
        return {"instances": len(snapshot["instances"])}


class FinalizingTriggerManager(TriggerManager):
    """Deletes the session once the final task's cascade has fired."""

    name = "finalizing"
    final_trigger = "t_finalizeSession"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        # Hooks run after the session lock is released, so deleting here is
        # safe; nothing in the session is in flight once the last task ended.
        if trigger_name == self.final_trigger:
            self.storage.delete()
