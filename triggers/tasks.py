"""Celery tasks of the ``triggers`` app, found by ``app.autodiscover_tasks()``.

``triggers.fire_due_timers`` applies the timers that are due (delayed fires
and deadlines); schedule it with Celery beat::

    CELERY_BEAT_SCHEDULE = {
        "triggers-timers": {"task": "triggers.fire_due_timers", "schedule": 10.0},
    }
"""

from __future__ import annotations

from celery import shared_task

__all__ = ["fire_due_timers_task"]


@shared_task(name="triggers.fire_due_timers", ignore_result=True)
def fire_due_timers_task(limit: int | None = None) -> int:
    """Apply the timers due now (at most ``limit``); how many fired."""
    from .timers import fire_due_timers

    return fire_due_timers(limit=limit)
