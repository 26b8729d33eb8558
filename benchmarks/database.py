"""What a fire costs on the database backend (PostgreSQL) next to the Redis
cache backend, in one table, as ratios to a PostgreSQL ``SELECT 1`` round
trip measured in the same run.

    .venv/bin/python benchmarks/database.py [--reps N]

Needs PostgreSQL (``TRIGGERS_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432``; the run creates and drops its own
database) and Redis (``TRIGGERS_BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379``, database 7, keys under a prefix of its own,
deleted at the end). Tasks go to a runner that only records the dispatch,
so the figures are the storage's and the manager's, not a broker's.

Cases (each timed fire is preceded by a timed ``SELECT 1`` and a timed Redis
``PING``, so all three see the same machine load):

1. *plain*: the first fire of a trigger in a 20-task session; it creates an
   instance that still waits for another trigger, schedules nothing.
2. *schedules*: the same, but the instance is ready and is dispatched.
3. *fan-in 400*: a fire into a task waiting for 400 triggers (fired one at a
   time in a shuffled order; the completing fire is not timed).

PostgreSQL runs with its defaults (``synchronous_commit = on``: every
write waits for the WAL flush); the ``async commit`` column repeats the
database cases with ``synchronous_commit = off`` on the benchmark's own
connection, which shows what the flush costs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUN_ID = uuid.uuid4().hex[:10]
PG = urlsplit(os.environ.get("TRIGGERS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"))
REDIS_URL = os.environ.get("TRIGGERS_BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
DB_NAME = f"triggers_bench_{RUN_ID}"
PREFIX = f"triggers-bench-db-{RUN_ID}"
TASK = "triggers.testing.DevNullTask"
NULL_RUNNER = "bench-null"


def configure() -> None:
    from django.conf import settings

    settings.configure(
        SECRET_KEY="triggers-benchmark-not-a-secret",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "triggers"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": DB_NAME,
                "USER": PG.username or "postgres",
                "PASSWORD": PG.password or "",
                "HOST": PG.hostname or "127.0.0.1",
                "PORT": str(PG.port or 5432),
            }
        },
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"{REDIS_URL}/7",
                "KEY_PREFIX": PREFIX,
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
            }
        },
        TRIGGERS={"CACHE": "default", "TIMEOUT": 3600},
    )
    import django

    django.setup()
    from celery import Celery

    # Task classes are looked up in the current Celery app (never sent:
    # the cases use a runner that only records the dispatch).
    app = Celery("triggers-bench-database", set_as_current=True)
    app.conf.broker_url = "memory://"
    app.set_default()
    import triggers.testing  # noqa: F401  (registers DevNullTask)


def admin(statement: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        dbname="postgres",
        user=PG.username or "postgres",
        password=PG.password or None,
        host=PG.hostname or "127.0.0.1",
        port=PG.port or 5432,
        autocommit=True,
    ) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(DB_NAME)))


# -- the cases ---------------------------------------------------------------------


class Bench:
    def __init__(self) -> None:
        import redis
        from django.db import connection

        self.connection = connection
        self.redis = redis.Redis.from_url(f"{REDIS_URL}/7")
        self.select1: list[int] = []
        self.pings: list[int] = []

    def time(self, call: Callable[[], Any], into: list[int]) -> None:
        with self.connection.cursor() as cursor:
            start = time.perf_counter_ns()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            self.select1.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        self.redis.ping()
        self.pings.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        call()
        into.append(time.perf_counter_ns() - start)


def manager_for(backend: str, uid: str) -> Any:
    from triggers.manager import TriggerManager
    from triggers.storages.cache import CacheStorageBackend
    from triggers.storages.database import DatabaseStorageBackend

    storage = DatabaseStorageBackend(uid) if backend == "database" else CacheStorageBackend(uid)
    return TriggerManager(storage)


def first_fires(backend: str, config: dict[str, Any], label: str) -> Any:
    """A feed of first fires ``s00``..``s19`` on fresh sessions."""
    session = 0
    while True:
        uid = f"{PREFIX}-{label}-{backend}-{session}"
        manager = manager_for(backend, uid)
        manager.update_configuration(config)
        for i in range(20):
            yield partial(manager.fire, f"s{i:02}", {"n": i, "text": "hello"})
        session += 1


def fan_in(backend: str, width: int) -> Any:
    rng = random.Random(width)
    after = [f"w{i:04}" for i in range(width)]
    config = {
        "t_wide": {"after": after, "run": TASK, "using": NULL_RUNNER},
        **{f"f{i:02}": {"after": [f"x{i:02}"], "run": TASK} for i in range(19)},
    }
    session = 0
    while True:
        uid = f"{PREFIX}-wide-{backend}-{session}"
        manager = manager_for(backend, uid)
        manager.update_configuration(config)
        pending = list(after)
        rng.shuffle(pending)
        while len(pending) > 1:
            trigger = pending.pop()
            yield partial(manager.fire, trigger, {"page": trigger, "answers": [0, 1, 2, 3, 4]})
        manager.fire(pending.pop())  # completes the task (not timed)
        session += 1


def feeds(backend: str) -> dict[str, Any]:
    idle = {
        f"t{i:02}": {"after": [f"s{i:02}", "gate"], "run": TASK, "using": NULL_RUNNER}
        for i in range(20)
    }
    ready = {
        f"t{i:02}": {"after": [f"s{i:02}"], "run": TASK, "using": NULL_RUNNER} for i in range(20)
    }
    return {
        "plain (20 tasks)": first_fires(backend, idle, "plain"),
        "schedules (20 tasks)": first_fires(backend, ready, "sched"),
        "fan-in 400": fan_in(backend, 400),
    }


def run(reps: int) -> None:
    from triggers.runners import task_runners
    from triggers.runners.base import BaseTaskRunner

    class NullRunner(BaseTaskRunner):
        """Records nothing, sends nothing: the fire's own cost only."""

        name = NULL_RUNNER

        def run(self, manager: Any, task_instance: Any) -> None:
            pass

    task_runners.register(NULL_RUNNER, NullRunner)
    bench = Bench()
    columns = ("database", "database-async", "cache")
    samples: dict[tuple[str, str], list[int]] = {}
    all_feeds = {column: feeds("cache" if column == "cache" else "database") for column in columns}
    for column in columns:
        for case in all_feeds[column]:
            samples[(column, case)] = []
    # Warm up every feed (connections, prepared scripts, imports).
    for column in columns:
        for feed in all_feeds[column].values():
            for _ in range(5):
                next(feed)()
    bench.select1.clear()
    bench.pings.clear()
    for _ in range(reps):
        for column in columns:
            commit = "off" if column == "database-async" else "on"
            with bench.connection.cursor() as cursor:
                cursor.execute(f"SET synchronous_commit = {commit}")
            for case, feed in all_feeds[column].items():
                bench.time(next(feed), samples[(column, case)])
    select1 = statistics.median(bench.select1)
    ping = statistics.median(bench.pings)
    print(
        f"\nfire() cost, median of {reps} fires per cell; unit: PostgreSQL SELECT 1 = "
        f"{select1 / 1000:.0f} µs (Redis PING = {ping / 1000:.0f} µs)\n"
    )
    header = (
        f"{'case':<22}{'PostgreSQL':>12}{'x SELECT 1':>12}{'async commit':>14}"
        f"{'x SELECT 1':>12}{'Redis':>10}{'x SELECT 1':>12}{'x PING':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in all_feeds["database"]:
        db = statistics.median(samples[("database", case)])
        dba = statistics.median(samples[("database-async", case)])
        rd = statistics.median(samples[("cache", case)])
        print(
            f"{case:<22}{db / 1000:>9.0f} µs{db / select1:>12.1f}{dba / 1000:>11.0f} µs"
            f"{dba / select1:>12.1f}{rd / 1000:>7.0f} µs{rd / select1:>12.1f}{rd / ping:>9.1f}"
        )
    print()


def cleanup_redis() -> None:
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL}/7")
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=300, help="timed fires per cell")
    args = parser.parse_args()
    admin("CREATE DATABASE {}")
    try:
        configure()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        try:
            run(args.reps)
        finally:
            from django.db import connections

            connections.close_all()
            cleanup_redis()
    finally:
        admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


if __name__ == "__main__":
    main()
