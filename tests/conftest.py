"""Fixtures shared by the whole suite: Redis, a real Celery worker, session ids."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from tests.celery_app import app as celery_app
from tests.worker import CeleryWorker, delete_run_queue, purge_broker


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Base URL of the test Redis server (no database number)."""
    return str(settings.TRIGGERS_TEST_REDIS_URL)


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """Client on the cache database, where session state is stored."""
    client = redis.Redis.from_url(f"{redis_url}/{settings.REDIS_CACHE_DB}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """A real ``celery worker`` (prefork, 2 processes) for the whole session.

    Tests that stop or kill it should call ``celery_worker.ensure_running()``
    (or ``restart()``) before they finish, so later tests find it up.
    """
    purge_broker(celery_app)
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    worker = CeleryWorker(celery_app, log_path=log_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        delete_run_queue(celery_app)


@pytest.fixture
def unique_uid(request: pytest.FixtureRequest) -> str:
    """A session UID no other test (or earlier run) uses."""
    label = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name)[:40].strip("-")
    return f"{label}-{uuid.uuid4().hex}"
