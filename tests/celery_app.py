"""Celery app for the test suite: ``celery -A tests.celery_app worker``.

Configuration comes from ``tests.settings`` (``CELERY_*`` names). Django is set
up by the worker, not at import time: importing this module must stay cheap and
must not configure Django before pytest-django does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _setup_django() -> None:
    from django.apps import apps

    if not apps.ready and not apps.loading:
        import django

        django.setup()


@signals.worker_init.connect
def _setup_django_in_worker(**kwargs: Any) -> None:
    # Celery's Django fixup already does this before CELERY_IMPORTS are
    # imported; repeating it (guarded) keeps the worker working without it.
    _setup_django()


def _redis_client() -> Any:
    import redis
    from django.conf import settings

    return redis.Redis.from_url(f"{settings.TRIGGERS_TEST_REDIS_URL}/{settings.REDIS_CACHE_DB}")


# Plain Celery tasks for infrastructure tests only; library tests use
# TriggerTask subclasses.


@app.task(name="tests.celery_app.ping_task")
def ping_task() -> str:
    return "pong"


@app.task(name="tests.celery_app.record_task")
def record_task(key: str, value: Any = None) -> None:
    """Append ``{"value": value, "pid": <worker process pid>}`` to Redis list ``key``."""
    client = _redis_client()
    try:
        client.rpush(key, json.dumps({"value": value, "pid": os.getpid()}))
        client.expire(key, 600)
    finally:
        client.close()
