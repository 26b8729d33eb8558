"""Settings of the example project.

The first part stands in for what ``django-admin startproject project``
generates; Getting started shows only the part after the marker, which a
new project appends to its generated settings.py.
"""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "not-a-secret"
DEBUG = True
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- triggers and Celery: append from here ------------------------------------
import os

INSTALLED_APPS += ["triggers", "questionnaire"]

# One Redis server, three databases: the application's cache, the session
# state of triggers, and Celery's broker.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

CACHES = {
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

# Read by project/celery.py (every CELERY_* setting configures Celery).
CELERY_BROKER_URL = f"{REDIS_URL}/2"
CELERY_IMPORTS = ["questionnaire.tasks"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# The report task sends mail; print it on the worker's console for now.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "surveys@example.com"
