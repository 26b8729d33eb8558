"""Fixtures shared by the whole suite: Redis, a real Celery worker, session ids."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from tests.celery_app import app as celery_app
from tests.contract_backends import new_uid
from tests.redis_cluster import (  # noqa: F401 (the cluster fixture and its marker)
    pytest_collection_modifyitems,
    redis_cluster_url,
)
from tests.worker import CeleryWorker, delete_run_queue, purge_broker
from triggers.manager import TriggerManager
from triggers.runners.base import force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend


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


# --- PostgreSQL for the database storage backend -------------------------------


@pytest.fixture(scope="session")
def postgres_database(django_db_blocker) -> Iterator[str]:
    """This run's own PostgreSQL database, migrated; dropped at the end."""
    from tests.postgres import create_database, drop_database

    with django_db_blocker.unblock():
        name = create_database()
    try:
        yield name
    finally:
        with django_db_blocker.unblock():
            drop_database()


@pytest.fixture(autouse=True)
def _database_backend_access(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests parametrised with the ``"database"`` storage kind (or marked
    ``postgres``) get the run's PostgreSQL database, open to every thread."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    wanted = any(isinstance(v, str) and v == "database" for v in params)
    if not wanted and request.node.get_closest_marker("postgres") is None:
        yield
        return
    request.getfixturevalue("postgres_database")
    with request.getfixturevalue("django_db_blocker").unblock():
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: the test uses the run's PostgreSQL database (database backend)"
    )
    config.addinivalue_line(
        "markers", "redis_cluster: the test uses the run's Redis Cluster or a cluster client"
    )
    config.addinivalue_line(
        "markers",
        "redis_broker: the test publishes through kombu's Redis transport whatever the "
        "suite's broker (it needs redis-py 6.1 or later)",
    )
    config.addinivalue_line(
        "markers",
        "redis_py6: the test checks redis-py 6+'s direct path (a connection each thread "
        "keeps, one batch of commands per round trip); older redis-py sends each command "
        "through the client",
    )


# -- fixtures the workflow tests share (moved from tests/contract_backends.py) --


@pytest.fixture(name="threaded")
def threaded_fixture() -> Iterator[None]:
    """Every task runs on the threading runner while the test runs."""
    previous = force_runner("threading")
    try:
        yield
    finally:
        ThreadingTaskRunner.join_all(30)
        force_runner(previous)


@pytest.fixture(name="manager")
def manager_fixture() -> TriggerManager:
    """A manager on a fresh session in the default (Redis) cache."""
    return TriggerManager(CacheStorageBackend(new_uid()))


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes started by a test, killed and reaped afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


@pytest.fixture
def timer_cache(settings) -> Iterator[str]:
    """A cache alias on the test Redis with a key prefix of its own, so the
    due index (triggers:{due:k}) a test sweeps holds only its own timers;
    its keys are deleted afterwards."""
    prefix = f"timers-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        **settings.CACHES,
        "timers": {**settings.CACHES["default"], "KEY_PREFIX": prefix},
    }
    yield "timers"
    client = redis.Redis.from_url(f"{settings.TRIGGERS_TEST_REDIS_URL}/{settings.REDIS_CACHE_DB}")
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def timer_storage(request: pytest.FixtureRequest, settings: Any) -> Callable[[str], Any]:
    """A factory of storages of the kind the test is parametrised with
    (indirectly: "redis", "database", "locmem" or "custom") whose due index
    holds only this test's timers (tests/test_timers.py and friends)."""
    kind = request.param if hasattr(request, "param") else "redis"
    if kind == "redis":
        alias = request.getfixturevalue("timer_cache")
        return lambda uid: CacheStorageBackend(uid, cache=alias)
    if kind == "locmem":
        location = f"timers-{uuid.uuid4().hex}"
        settings.CACHES = {
            **settings.CACHES,
            "timers-locmem": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": location,
            },
        }
        return lambda uid: CacheStorageBackend(uid, cache="timers-locmem")
    if kind == "database":
        from tests.contract_backends import POSTGRES_ALIAS
        from triggers.storages.database import DatabaseStorageBackend
        from triggers.timer_models import DueTimer

        DueTimer.objects.using(POSTGRES_ALIAS).all().delete()
        return lambda uid: DatabaseStorageBackend(uid, database=POSTGRES_ALIAS)
    from tests.contract_backends import DictStorage
    from triggers.storages import due_index

    # A custom backend's due index is one table per process: start this
    # test with it empty (other tests' sessions may have left timers there).
    due_index._MEMORY._change(lambda table: table.clear())
    return DictStorage
