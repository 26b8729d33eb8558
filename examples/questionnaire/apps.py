from __future__ import annotations

from django.apps import AppConfig


class QuestionnaireConfig(AppConfig):
    name = "examples.questionnaire"
    label = "questionnaire"

    def ready(self) -> None:
        # Makes the demo's Celery app the current one in every process that
        # sets Django up (web and worker alike), so tasks are published to its
        # broker, not to Celery's default app.
        from . import celery_app  # noqa: F401
