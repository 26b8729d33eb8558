"""What every benchmark case shares: the Django/Celery set-up, the timed
``fire()``, PING sampling and the result table.

Importing this module configures Django with ``benchmarks.settings`` (unless
``DJANGO_SETTINGS_MODULE`` says otherwise) and registers a runner that
accepts instances and does nothing, so a case can time storage alone.

``TRIGGERS_BENCH_TREE`` names another checkout whose ``triggers`` package the
cases import instead of this one's (``compare.py`` uses it to time an older
tree with the same benchmark code); the benchmark's own modules always come
from here.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
#: The checkout whose ``triggers`` is timed (this one unless set).
TREE = os.path.abspath(os.environ.get("TRIGGERS_BENCH_TREE") or ROOT)
if TREE != ROOT:
    sys.path.insert(0, TREE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.cache import caches  # noqa: E402

import triggers.testing  # noqa: E402,F401  (registers the ready-made tasks the cases run)
from triggers.locking import redis_client_for_cache  # noqa: E402
from triggers.manager import TriggerManager  # noqa: E402
from triggers.runners import task_runners  # noqa: E402
from triggers.runners.base import BaseTaskRunner  # noqa: E402
from triggers.storages.cache import CacheStorageBackend  # noqa: E402
from triggers.types import TaskInstance  # noqa: E402

TASK = "triggers.testing.DevNullTask"
NULL_RUNNER = "bench-null"


class NullRunner(BaseTaskRunner):
    """Accepts every instance and does nothing: isolates the storage cost."""

    name = NULL_RUNNER

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        return None


task_runners.register(NULL_RUNNER, NullRunner)


def redis_client() -> Any:
    """The redis-py client the session cache itself uses."""
    return redis_client_for_cache(caches["default"])


def manager_for(uid: str) -> TriggerManager:
    return TriggerManager(CacheStorageBackend(uid))


def fire(uid: str, trigger: str, kwargs: dict[str, Any]) -> list[TaskInstance]:
    """What a web request does: build the manager, fire once."""
    return TriggerManager(CacheStorageBackend(uid)).fire(trigger, kwargs)


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


class Sampler:
    """Times calls, each preceded by a timed ``PING`` on the cache's client,
    so both see the same machine load (CPU wake-ups, other processes)."""

    def __init__(self) -> None:
        self.client = redis_client()
        self.pings: list[int] = []
        #: Client CPU (``time.process_time``) of every timed call, in ns.
        self.cpu: list[int] = []

    def ping(self) -> None:
        start = time.perf_counter_ns()
        self.client.ping()
        self.pings.append(time.perf_counter_ns() - start)

    def time(self, call: Callable[[], Any], into: list[int]) -> None:
        self.ping()
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        call()
        into.append(time.perf_counter_ns() - start)
        self.cpu.append(time.process_time_ns() - cpu)


class BackToBack:
    """PINGs with nothing in between, taken in bursts between the cases so
    they see the same machine as the fires: the unit the targets use."""

    def __init__(self) -> None:
        self.client = redis_client()
        self.pings: list[int] = []

    def burst(self, count: int) -> None:
        ping, clock = self.client.ping, time.perf_counter_ns
        for _ in range(count):
            start = clock()
            ping()
            self.pings.append(clock() - start)

    @property
    def median_us(self) -> float:
        return median_us(self.pings)


def fill_config(prefix: str, count: int) -> dict[str, dict[str, Any]]:
    """``count`` tasks that other triggers start (a realistically sized config)."""
    return {f"{prefix}{i:02}": {"after": [f"{prefix}{i:02}_go"], "run": TASK} for i in range(count)}


def make_celery_app() -> Any:
    from celery import Celery

    app = Celery("triggers-bench", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.set_default()
    return app


def session_keys(client: Any, uid: str) -> list[bytes]:
    """Every Redis key of one session: ``...:<uid>:...``, or with the uid in
    a hash tag, ``...{<length>:<uid>}:...``."""
    marks = (f":{uid}:".encode(), f":{uid}}}:".encode())
    found = client.scan_iter(match=f"*{uid}*", count=1000)
    return [key for key in found if any(mark in key for mark in marks)]


def cleanup(app: Any | None) -> None:
    """Delete every key this run wrote (session state and broker queue)."""
    import redis

    for db, prefix in (
        (settings.CACHE_DB, f"*{settings.CACHE_PREFIX}*"),
        (settings.BROKER_DB, f"{settings.BROKER_PREFIX}*"),
    ):
        client = redis.Redis.from_url(f"{settings.REDIS_URL}/{db}")
        keys = list(client.scan_iter(match=prefix, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    if app is not None:
        app.close()


@dataclass
class Row:
    """One line of the result table.

    ``ratio`` is what the target is held against: for a time, the median
    divided by the back-to-back PING; for growth, the ratio of two medians;
    for an absolute figure (CPU, bytes), the figure itself in ``unit``.
    ``interleaved`` is the same time divided by PINGs timed between fires.
    """

    case: str
    median_us: float | None
    ratio: float
    target: float | None
    original: str = ""
    interleaved: float | None = None
    unit: str = ""  # "x" for growth, "us"/"B" for absolute figures, "" for PINGs

    @property
    def passed(self) -> bool:
        return self.target is None or self.ratio <= self.target

    def _fmt(self, value: float) -> str:
        if self.unit == "x":
            return f"x{value:.2f}"
        if self.unit:
            return f"{value:,.0f} {self.unit}"
        return f"{value:.2f}"

    def cells(self) -> list[str]:
        target = f"<= {self._fmt(self.target)}" if self.target is not None else ""
        result = ("PASS" if self.passed else "FAIL") if self.target is not None else ""
        return [
            self.case,
            f"{self.median_us:,.0f}" if self.median_us is not None else "",
            self._fmt(self.ratio),
            f"{self.interleaved:.2f}" if self.interleaved is not None else "",
            target,
            result,
            self.original,
        ]


HEADER = ["case", "median us", "figure", "interleaved", "target", "result", "original"]


def print_table(rows: list[Row]) -> None:
    body = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[c]) for line in body) for c in range(len(HEADER))]
    for n, line in enumerate(body):
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
