"""The default runner: each ready instance becomes one Celery message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError
from .base import BaseTaskRunner, build_message

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..types import TaskInstance


class CeleryTaskRunner(BaseTaskRunner):
    name = "celery"

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        task = self.resolve(task_instance.config.run, task_instance.config.name)
        if task.app.conf.task_always_eager:
            # Eager mode would run the task inside the fire, under the session
            # lock the task itself needs: refuse rather than deadlock.
            raise ConfigurationError(
                "CeleryTaskRunner refuses to run with task_always_eager; use the "
                "'threading' runner (triggers.testing does this for tests)",
                task=task_instance.config.name,
                directive="using",
            )
        cooldown = task_instance.metadata.get("cooldown")
        task.apply_async(kwargs=build_message(manager, task_instance), countdown=cooldown or None)
