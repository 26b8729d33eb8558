"""Django settings of the questionnaire demo.

The demo exports ``QUESTIONNAIRE_DEMO_REDIS_URL`` (the Redis it found or
started), ``QUESTIONNAIRE_DEMO_RUN_ID`` and, if one was given,
``QUESTIONNAIRE_DEMO_BROKER_URL`` before anything imports this, so the worker
and the firing processes it starts share one configuration. Every key the run
writes starts with ``qdemo-<run id>:`` and its Celery queue is
``questionnaire-demo-<run id>``, so runs never mix, even on a shared Redis or
broker.

Session state lives in its own cache alias (``triggers``), apart from the
application's ``default`` cache, as a real project would do it.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

REDIS_URL = os.environ.get("QUESTIONNAIRE_DEMO_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
RUN_ID = os.environ.get("QUESTIONNAIRE_DEMO_RUN_ID", "manual")
REDIS_DB = 3
KEY_PREFIX = f"qdemo-{RUN_ID}"

SECRET_KEY = "questionnaire-demo-not-a-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["triggers", "examples.questionnaire"]
DATABASES: dict[str, dict[str, str]] = {}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "triggers": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{REDIS_URL}/{REDIS_DB}",
        "KEY_PREFIX": KEY_PREFIX,
        "TIMEOUT": 3600,
    },
}

TRIGGERS = {
    "CACHE": "triggers",
    "WORKFLOWS": {"questionnaire": "workflow.json"},
    "WORKFLOWS_DIR": str(BASE_DIR),
    "DEFAULT_WORKFLOW": "questionnaire",
}

# Read by examples.questionnaire.celery_app (CELERY_ namespace). The broker
# is the demo's Redis unless another one (RabbitMQ, say) was given.
CELERY_BROKER_URL = os.environ.get("QUESTIONNAIRE_DEMO_BROKER_URL") or f"{REDIS_URL}/{REDIS_DB}"
BROKER_IS_REDIS = CELERY_BROKER_URL.partition(":")[0] in ("redis", "rediss", "redis+socket")
# Kept apart from the sessions' keys, so the broker's can go even with --keep.
BROKER_KEY_PREFIX = f"{KEY_PREFIX}:broker"
if BROKER_IS_REDIS:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{BROKER_KEY_PREFIX}:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = f"questionnaire-demo-{RUN_ID}"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_BACKEND = None
CELERY_IMPORTS = ["examples.questionnaire.tasks"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
