"""Time ``TriggerManager.fire()`` against real Redis, in Redis round trips.

Run it with ``make bench`` (or ``.venv/bin/python benchmarks/run.py``). Every
figure is a median of many fires divided by the median of a Redis ``PING``
measured in the same run on the same client, so results from machines of
different speeds compare. See ``benchmarks/README.md`` for what each case
does. Exits non-zero when a target is missed or exactly-once scheduling is
violated.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.cache import caches  # noqa: E402

from triggers.locking import redis_client_for_cache  # noqa: E402
from triggers.manager import TriggerManager  # noqa: E402
from triggers.runners import task_runners  # noqa: E402
from triggers.runners.base import BaseTaskRunner  # noqa: E402
from triggers.storages.cache import CacheStorageBackend  # noqa: E402
from triggers.types import TaskInstance  # noqa: E402

TASK = "triggers.testing.DevNullTask"
NULL_RUNNER = "bench-null"
PROCESSES = 4
#: Cases 1-3 run in this many interleaved slices.
ROUNDS = 4


class NullRunner(BaseTaskRunner):
    """Accepts every instance and does nothing: isolates the storage cost."""

    name = NULL_RUNNER

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        return None


task_runners.register(NULL_RUNNER, NullRunner)


# -- helpers -----------------------------------------------------------------
def redis_client() -> Any:
    """The redis-py client the session cache itself uses."""
    return redis_client_for_cache(caches["default"])


def manager_for(uid: str) -> TriggerManager:
    return TriggerManager(CacheStorageBackend(uid))


def fire(uid: str, trigger: str, kwargs: dict[str, Any]) -> list[TaskInstance]:
    """What a web request does: build the manager, fire once."""
    return TriggerManager(CacheStorageBackend(uid)).fire(trigger, kwargs)


class Sampler:
    """Times calls, each preceded by a timed ``PING`` on the cache's client,
    so both see the same machine load (CPU wake-ups, other processes)."""

    def __init__(self) -> None:
        self.client = redis_client()
        self.pings: list[int] = []

    def ping(self) -> None:
        start = time.perf_counter_ns()
        self.client.ping()
        self.pings.append(time.perf_counter_ns() - start)

    def time(self, call: Callable[[], Any], into: list[int]) -> None:
        self.ping()
        start = time.perf_counter_ns()
        call()
        into.append(time.perf_counter_ns() - start)


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def fill_config(prefix: str, count: int) -> dict[str, dict[str, Any]]:
    """``count`` tasks that other triggers start (a realistically sized config)."""
    return {f"{prefix}{i:02}": {"after": [f"{prefix}{i:02}_go"], "run": TASK} for i in range(count)}


def first_fires(sampler: Sampler, reps: int, uid_prefix: str, config: dict[str, Any]) -> list[int]:
    """Fire ``s00``..``s19`` once each on fresh sessions configured with
    ``config`` (configuring is not timed)."""
    samples: list[int] = []
    session = 0
    while len(samples) < reps:
        uid = f"{uid_prefix}-{session}"
        manager_for(uid).update_configuration(config)
        for i in range(min(20, reps - len(samples))):
            trigger, kwargs = f"s{i:02}", {"n": i, "text": "hello"}
            sampler.time(partial(fire, uid, trigger, kwargs), samples)
        session += 1
    return samples


# -- cases ---------------------------------------------------------------------
def case_no_schedule(sampler: Sampler, reps: int, run_id: str) -> list[int]:
    """First fire of a trigger in a 20-task session: creates an instance that
    still waits for another trigger, schedules nothing."""
    config = {f"t{i:02}": {"after": [f"s{i:02}", "gate"], "run": TASK} for i in range(20)}
    return first_fires(sampler, reps, f"{run_id}-idle", config)


def case_publish(sampler: Sampler, reps: int, run_id: str) -> list[int]:
    """A fire that makes one instance ready and publishes it with the Celery
    runner (no worker: the message stays in the queue until cleanup)."""
    config = {f"t{i:02}": {"after": [f"s{i:02}"], "run": TASK} for i in range(20)}
    samples = first_fires(sampler, reps, f"{run_id}-pub", config)
    scheduled = manager_for(f"{run_id}-pub-0").storage["t00#0"]
    if scheduled.status != TaskInstance.STATUS_SCHEDULED:
        raise SystemExit(f"publish case: t00#0 is {scheduled.status}, expected scheduled")
    return samples


def _every_config(variant: str) -> dict[str, dict[str, Any]]:
    if variant == "unstarted":
        task = {"after": ["a", "b"], "andEvery": "b", "run": TASK, "using": NULL_RUNNER}
    else:
        task = {"after": ["b"], "andEvery": "b", "run": TASK, "using": NULL_RUNNER}
    return {"t_every": task, **fill_config("f", 19)}


def case_growth(
    sampler: Sampler, variant: str, small: int, large: int, reps: int, run_id: str
) -> tuple[list[int], list[int]]:
    """Fires of ``b`` on sessions holding ``small`` vs ``large`` instances of
    an ``andEvery: b`` task, interleaved so machine load affects both alike.
    Each fire adds an instance, so small sessions are replaced after a few
    fires to stay near ``small``."""
    config = _every_config(variant)
    per_small_session = max(1, small // 2)

    def prepared(uid: str, size: int) -> str:
        manager = manager_for(uid)
        manager.update_configuration(config)
        for n in range(size):
            manager.fire("b", {"n": n})
        return uid

    big = prepared(f"{run_id}-{variant}-large", large)
    little = ""
    small_samples: list[int] = []
    large_samples: list[int] = []
    for rep in range(reps):
        if rep % per_small_session == 0:
            little = prepared(f"{run_id}-{variant}-small-{rep}", small)
        kwargs = {"n": rep}
        sampler.time(partial(fire, little, "b", kwargs), small_samples)
        sampler.time(partial(fire, big, "b", kwargs), large_samples)
    instances = manager_for(big).storage.instances.values()
    statuses = {i.status for i in instances if i.config.name == "t_every"}
    if statuses != {variant}:
        raise SystemExit(f"growth case {variant}: instances are {statuses}, expected {variant}")
    return small_samples, large_samples


def _concurrent_worker(
    uid: str, index: int, fires: int, barrier: Any, results: Any, warmup_uid: str
) -> None:
    for n in range(30):
        fire(warmup_uid, "b", {"n": n})
    barrier.wait()
    start = time.perf_counter_ns()
    scheduled: list[str] = []
    for n in range(fires):
        scheduled += [i.name for i in fire(uid, "tick", {"p": index, "n": n})]
    scheduled += [i.name for i in fire(uid, f"done{index}", {"p": index})]
    end = time.perf_counter_ns()
    results.put((index, start, end, scheduled))


def case_concurrent(fires_per_process: int, run_id: str) -> tuple[float, list[str]]:
    """``PROCESSES`` processes fire at one session at once; returns the wall
    time per fire (µs) and a list of exactly-once violations (empty if none)."""
    uid = f"{run_id}-concurrent"
    manager = manager_for(uid)
    done = [f"done{p}" for p in range(PROCESSES)]
    manager.update_configuration(
        {
            "t_tick": {"after": ["tick"], "andEvery": "tick", "run": TASK, "using": NULL_RUNNER},
            "t_all": {"after": done, "run": TASK, "using": NULL_RUNNER},
            **fill_config("f", 18),
        }
    )
    for p in range(PROCESSES):
        manager_for(f"{uid}-warm-{p}").update_configuration(_every_config("scheduled"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_concurrent_worker,
            args=(uid, p, fires_per_process, barrier, results, f"{uid}-warm-{p}"),
        )
        for p in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    start = min(o[1] for o in outcomes)
    end = max(o[2] for o in outcomes)
    total_fires = PROCESSES * (fires_per_process + 1)
    per_fire_us = (end - start) / 1000 / total_fires

    problems = []
    returned = [name for o in outcomes for name in o[3]]
    if len(returned) != len(set(returned)):
        problems.append("some instance was returned as scheduled by two fires")
    instances = manager.storage.instances
    ticks = {n: i for n, i in instances.items() if i.config.name == "t_tick"}
    alls = {n: i for n, i in instances.items() if i.config.name == "t_all"}
    if len(ticks) != PROCESSES * fires_per_process:
        problems.append(f"{len(ticks)} t_tick instances for {PROCESSES * fires_per_process} fires")
    if {i.status for i in ticks.values()} != {TaskInstance.STATUS_SCHEDULED}:
        problems.append("not every t_tick instance is scheduled")
    if list(alls) != ["t_all#0"] or alls["t_all#0"].status != TaskInstance.STATUS_SCHEDULED:
        problems.append(f"t_all should be scheduled exactly once, found {sorted(alls)}")
    if set(returned) != set(ticks) | set(alls):
        problems.append("the fires' returned instances differ from the stored scheduled ones")
    return per_fire_us, problems


# -- plumbing --------------------------------------------------------------------
def make_celery_app() -> Any:
    from celery import Celery

    app = Celery("triggers-bench", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.set_default()
    return app


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
    case: str
    median_us: float | None
    ping_us: float | None
    ratio: float
    target: float | None
    original: str
    growth: bool = False  # a ratio between two fires rather than to PING

    @property
    def passed(self) -> bool:
        return self.target is None or self.ratio <= self.target

    def cells(self) -> list[str]:
        sign = "x" if self.growth else ""
        target = f"<= {sign}{self.target:g}" if self.target is not None else ""
        result = ("PASS" if self.passed else "FAIL") if self.target is not None else ""
        return [
            self.case,
            f"{self.median_us:,.0f}" if self.median_us is not None else "",
            f"{self.ping_us:,.0f}" if self.ping_us is not None else "",
            f"{sign}{self.ratio:.2f}",
            target,
            result,
            self.original,
        ]


def print_table(rows: list[Row]) -> None:
    header = ["case", "median us", "PING us", "ratio", "target", "result", "original"]
    body = [header] + [r.cells() for r in rows]
    widths = [max(len(line[c]) for line in body) for c in range(len(header))]
    for n, line in enumerate(body):
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0

    def n(count: int) -> int:
        return max(10, int(count * scale))

    run_id = settings.RUN_ID
    started = time.monotonic()
    load = os.getloadavg()
    print(
        f"triggers fire() benchmark, run {run_id}: {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"Redis {settings.REDIS_URL} (cache db {settings.CACHE_DB}, broker db "
        f"{settings.BROKER_DB}), django-redis cache, Celery broker on Redis, no worker\n"
    )
    app = make_celery_app()
    samplers = {name: Sampler() for name in ("idle", "publish", "unstarted", "scheduled")}
    try:
        # Warm up: imports, script loading, connections, the broker's exchange.
        warm = Sampler()
        case_no_schedule(warm, 100, f"{run_id}-warm")
        case_publish(warm, 100, f"{run_id}-warm")
        for _ in range(1000):
            warm.ping()
        bare = Sampler()
        for _ in range(n(2000)):
            bare.ping()

        # The cases take turns, a slice each per round, so a shift in what
        # else the machine runs hits every case alike.
        idle: list[int] = []
        publish: list[int] = []
        unstarted: tuple[list[int], list[int]] = ([], [])
        scheduled: tuple[list[int], list[int]] = ([], [])
        for r in range(ROUNDS):
            tag = f"{run_id}-r{r}"
            idle += case_no_schedule(samplers["idle"], n(2000) // ROUNDS, tag)
            publish += case_publish(samplers["publish"], n(2000) // ROUNDS, tag)
            for variant, into in (("unstarted", unstarted), ("scheduled", scheduled)):
                small, large = case_growth(
                    samplers[variant], variant, 10, 1000, n(1000) // ROUNDS, tag
                )
                into[0].extend(small)
                into[1].extend(large)
        concurrent_us, problems = case_concurrent(n(500), run_id)
    finally:
        cleanup(app)

    all_pings = [p for sampler in samplers.values() for p in sampler.pings]
    ping_us = median_us(all_pings)

    def row(case: str, samples: list[int], sampler: str, target: float | None, orig: str) -> Row:
        fire_us, case_ping = median_us(samples), median_us(samplers[sampler].pings)
        return Row(case, fire_us, case_ping, fire_us / case_ping, target, orig)

    rows = [Row("Redis PING (redis-py, same client)", ping_us, None, 1.0, None, "")]
    rows.append(row("1. fire, schedules nothing (20 tasks)", idle, "idle", 5, "7.0"))
    rows.append(row("2. fire, publishes 1 Celery task", publish, "publish", 8, "13.7"))
    for label, (small, large), original in (
        ("unstarted", unstarted, "x5.5"),
        ("scheduled", scheduled, "x4.6"),
    ):
        rows.append(row(f"3. andEvery, 10 {label} instances", small, label, None, ""))
        rows.append(row(f"3. andEvery, 1000 {label} instances", large, label, None, ""))
        growth = median_us(large) / median_us(small)
        rows.append(Row(f"3. growth 10 -> 1000 {label}", None, None, growth, 1.3, original, True))
    rows.append(
        Row(
            f"4. {PROCESSES} processes, wall time per fire",
            concurrent_us,
            ping_us,
            concurrent_us / ping_us,
            5.5,
            "8.3",
        )
    )
    print_table(rows)
    print(
        f"\nPING: median of {len(all_pings)} pings, each timed just before a timed fire on "
        "the same client; each case is divided by its own pings, case 4 by all of them. "
        f"Back-to-back pings (nothing in between) take {median_us(bare.pings):.0f} us."
    )
    if problems:
        print("exactly-once scheduling VIOLATED:\n  " + "\n  ".join(problems))
    else:
        print(
            f"exactly-once scheduling: OK ({PROCESSES} x {n(500)} fires: every instance "
            "scheduled once, the task waiting for all processes once)"
        )
    load = os.getloadavg()
    print(
        f"took {time.monotonic() - started:.0f} s; load average now "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    failed = [r.case for r in rows if not r.passed]
    if failed or problems:
        print("FAILED: " + "; ".join(failed + problems))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
