"""Django settings for the fire() benchmark: django-redis on loopback Redis,
and a Celery broker on Redis for the case that publishes.

Environment knobs:

- ``TRIGGERS_BENCH_REDIS_URL``: Redis server without a database number
  (default ``redis://127.0.0.1:6379``).
- ``TRIGGERS_BENCH_CACHE_DB`` / ``TRIGGERS_BENCH_BROKER_DB``: databases for
  session state and for the broker (default 7 and 8).

Each run uses its own key prefix (``TRIGGERS_BENCH_RUN_ID``, set by
``run.py`` and inherited by the processes it starts) and deletes its keys when
it ends, so it can share a server with the test suite.
"""

from __future__ import annotations

import os
import uuid

SECRET_KEY = "triggers-benchmark-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["triggers"]
DATABASES: dict[str, dict[str, str]] = {}

REDIS_URL = os.environ.get("TRIGGERS_BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
CACHE_DB = int(os.environ.get("TRIGGERS_BENCH_CACHE_DB", "7"))
BROKER_DB = int(os.environ.get("TRIGGERS_BENCH_BROKER_DB", "8"))
RUN_ID = os.environ.setdefault("TRIGGERS_BENCH_RUN_ID", uuid.uuid4().hex[:10])

#: Every key this run writes starts with one of these.
CACHE_PREFIX = f"triggers-bench-{RUN_ID}"
BROKER_PREFIX = f"triggers-bench-{RUN_ID}:"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"{REDIS_URL}/{CACHE_DB}",
        "KEY_PREFIX": CACHE_PREFIX,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}

TRIGGERS = {"CACHE": "default", "TIMEOUT": 3600}

# Read by run.py's Celery app (namespace CELERY).
CELERY_BROKER_URL = f"{REDIS_URL}/{BROKER_DB}"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = f"triggers-bench-{RUN_ID}"
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": BROKER_PREFIX}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
