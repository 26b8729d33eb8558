"""Removing old sessions every night with Celery beat."""

from __future__ import annotations

from celery import shared_task
from celery.schedules import crontab
from django.core.management import call_command


@shared_task(name="project.retention.cleanup_sessions")
def cleanup_sessions() -> None:
    # Finished sessions after a month; anything idle for half a year.
    call_command(
        "triggers_cleanup",
        "--resolved-older-than",
        "30d",
        "--unresolved-older-than",
        "180d",
    )


# In settings.py (read by the Celery app with the CELERY_ namespace):
CELERY_BEAT_SCHEDULE = {
    "triggers-cleanup": {
        "task": "project.retention.cleanup_sessions",
        "schedule": crontab(hour=3, minute=17),
    },
}
