"""A task runner that queues ready instances and runs them when asked.

Useful in scripts and data migrations: fire a batch of triggers, then run
what became ready, one instance at a time in the current thread.
"""

from __future__ import annotations

from typing import Any

from triggers.manager import TriggerManager
from triggers.runners import BaseTaskRunner, task_runners
from triggers.runners.base import build_message
from triggers.types import TaskInstance


@task_runners.register("deferred")
class DeferredTaskRunner(BaseTaskRunner):
    name = "deferred"

    # The registry builds a new runner per dispatch, so the queue is shared.
    pending: list[tuple[Any, dict[str, Any]]] = []

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        # Called while the session is locked: only queue the work here. The
        # message names the session, instance, manager and storage; the
        # trigger kwargs are read from storage when the task runs.
        task = self.resolve(task_instance.config.run, task_instance.config.name)
        self.pending.append((task, build_message(manager, task_instance)))

    @classmethod
    def run_pending(cls) -> int:
        """Run queued instances (and the ones their cascades queue) until
        none is left; returns how many ran."""
        count = 0
        while cls.pending:
            task, message = cls.pending.pop(0)
            try:
                task.execute_message(message)
            except Exception:
                pass  # recorded on the instance as 'failed'
            count += 1
        return count
