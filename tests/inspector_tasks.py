"""Tasks for the inspector's tests (tests/test_inspector*.py); the worker
imports this module (``CELERY_IMPORTS``)."""

from __future__ import annotations

from typing import Any

from triggers.task import TaskContext, TriggerTask


class FlakyTask(TriggerTask):
    """Fails unless one of its trigger kwargs says ``{"ok": true}``, so a
    replay with replacement kwargs can make it finish."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        if any(isinstance(kw, dict) and kw.get("ok") for kw in context.trigger_kwargs.values()):
            return {"fixed": True}
        raise RuntimeError(f"{context.instance_name}: the upstream service said no")
