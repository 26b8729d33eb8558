"""The demo's Celery app: ``celery -A examples.questionnaire.celery_app worker``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.questionnaire.settings")

app = Celery("questionnaire")
app.config_from_object("django.conf:settings", namespace="CELERY")
