"""Settings of the example project: what triggers needs, and little else."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "not-a-secret")
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "triggers",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

CACHES = {
    # The application's own cache.
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{REDIS_URL}/0",
    },
    # Session state of triggers, kept apart so clearing the application's
    # cache never loses a workflow.
    "triggers": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{REDIS_URL}/1",
        "TIMEOUT": None,  # keep sessions until they are deleted
    },
}

TRIGGERS = {
    "CACHE": "triggers",
    # Workflows by name; relative file paths are resolved against BASE_DIR.
    "WORKFLOWS": {"questionnaire": "questionnaire/workflow.json"},
}

CELERY_BROKER_URL = f"{REDIS_URL}/2"
CELERY_IMPORTS = ["questionnaire.tasks"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "surveys@example.com"
