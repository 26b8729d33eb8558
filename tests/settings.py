"""Throwaway Django project for the test suite, ``manage.py`` and the worker.

Environment knobs:

- ``TRIGGERS_TEST_REDIS_URL`` / ``TRIGGERS_TEST_REDIS``: which Redis server
  (see ``tests.redis_server``).
- ``TRIGGERS_TEST_CACHE_BACKEND``: ``django`` (default, Django's own
  RedisCache), ``django-redis`` or ``django-redis-cache``.
- ``TRIGGERS_TEST_BROKER_URL``: Celery broker; default is database 2 of the
  test Redis server.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any
from urllib.parse import urlsplit

from tests.redis_server import ensure_redis_url

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECRET_KEY = "triggers-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # Above django.contrib.admin: its admin/index.html adds the inspector link.
    "triggers",
    "tests",
    # The web inspector (triggers.urls) and its tests.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

# --- The web inspector -------------------------------------------------------

ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # pytest-django runs tests against an in-memory copy; this file is only
        # used by `manage.py` and the demo.
        "NAME": os.environ.get(
            "TRIGGERS_TEST_DB", os.path.join(tempfile.gettempdir(), "triggers-tests.sqlite3")
        ),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# --- Redis -----------------------------------------------------------------

# Base URL without a database number, e.g. redis://127.0.0.1:6379.
TRIGGERS_TEST_REDIS_URL = ensure_redis_url()
REDIS_CACHE_DB = 1
REDIS_BROKER_DB = 2

_CACHE_BACKEND = os.environ.get("TRIGGERS_TEST_CACHE_BACKEND", "django")
_CACHE_LOCATION = f"{TRIGGERS_TEST_REDIS_URL}/{REDIS_CACHE_DB}"

_default_cache: dict[str, Any]
if _CACHE_BACKEND == "django":
    _default_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _CACHE_LOCATION,
    }
elif _CACHE_BACKEND == "django-redis":
    _default_cache = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _CACHE_LOCATION,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
elif _CACHE_BACKEND == "django-redis-cache":
    # The legacy django-redis-cache package wants host:port and the db apart.
    _redis = urlsplit(TRIGGERS_TEST_REDIS_URL)
    _default_cache = {
        "BACKEND": "redis_cache.RedisCache",
        "LOCATION": f"{_redis.hostname}:{_redis.port or 6379}",
        "OPTIONS": {"DB": REDIS_CACHE_DB},
    }
else:
    raise ValueError(
        f"TRIGGERS_TEST_CACHE_BACKEND={_CACHE_BACKEND!r} is not one of "
        "'django', 'django-redis', 'django-redis-cache'."
    )

CACHES = {"default": _default_cache}
# Extra aliases for the storage contract suite: the same Redis database through
# Django's own backend and through django-redis, whatever the default is, and a
# process-local cache that exercises the generic (non-Redis) storage path.
CACHES["builtin-redis"] = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": _CACHE_LOCATION,
}
CACHES["djredis"] = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": _CACHE_LOCATION,
    "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
}
CACHES["locmem"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "triggers-tests",
}

# Fault tests restart the worker with a short lease to see takeovers quickly.
TRIGGERS = {"CACHE": "default", "LEASE_EXPIRE": float(os.environ.get("TRIGGERS_TEST_LEASE", "10"))}
# The cluster tests (tests/test_cluster.py) start Celery workers and firing
# processes with session state on the test Redis Cluster, on a queue of their
# own (so the suite's ordinary worker never takes their tasks).
_REDIS_CLIENT = os.environ.get("TRIGGERS_TEST_REDIS_CLIENT")
if _REDIS_CLIENT:
    TRIGGERS["REDIS_CLIENT"] = _REDIS_CLIENT

# --- Celery (read by tests.celery_app with the CELERY_ namespace) ----------

TRIGGERS_TEST_RUN_ID = os.environ.setdefault(
    "TRIGGERS_TEST_RUN_ID", f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
)

# --- PostgreSQL (the database storage backend) ------------------------------

# The run's own database: tests.conftest's ``postgres_database`` fixture
# creates it (and migrates it) and drops it at the end. Its name comes from
# the run id, which the worker and spawned processes inherit, so they open
# the same database. TRIGGERS_TEST_PG_URL (postgresql://user@host:port)
# points at another server.
_pg = urlsplit(os.environ.get("TRIGGERS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432"))
DATABASES["postgres"] = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "triggers_test_" + TRIGGERS_TEST_RUN_ID.replace("-", "_").lower(),
    "USER": _pg.username or "postgres",
    "PASSWORD": _pg.password or "",
    "HOST": _pg.hostname or "127.0.0.1",
    "PORT": str(_pg.port or 5432),
    # pytest-django never sets this one up: the fixture does.
    "TEST": {"MIGRATE": False},
}

CELERY_BROKER_URL = os.environ.get(
    "TRIGGERS_TEST_BROKER_URL", f"{TRIGGERS_TEST_REDIS_URL}/{REDIS_BROKER_DB}"
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_IMPORTS = ["tests.tasks", "triggers.testing", "tests.inspector_tasks", "triggers.tasks"]
# Kombu's Redis transport redelivers an unacknowledged message only after the
# visibility timeout (an hour by default); tests that kill a worker mid-task
# can shorten it here.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("TRIGGERS_TEST_VISIBILITY_TIMEOUT", "3600")),
    # Each test run (and the worker it starts, which inherits the variable)
    # gets its own broker keys and queue, so runs side by side on one Redis
    # or RabbitMQ never take or purge each other's messages.
    "global_keyprefix": f"{TRIGGERS_TEST_RUN_ID}:",
}
CELERY_TASK_DEFAULT_QUEUE = f"triggers-tests-{TRIGGERS_TEST_RUN_ID}"
if _REDIS_CLIENT:
    CELERY_TASK_DEFAULT_QUEUE += "-cluster"

# --- Logging: quiet unless something is wrong ------------------------------

# Records still reach loggers (and any handler the library attaches, e.g. to
# track the highest level an instance logged); only the console is quiet.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"triggers": {"level": "DEBUG"}},
}
