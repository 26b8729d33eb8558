"""A bounded soak: many processes fire into many sessions at once while a real
Celery worker runs the tasks; then every trigger and every run is accounted
for.

Run it with ``make soak`` (or ``.venv/bin/python benchmarks/soak.py``; see
``--help`` for sizes). It uses the test suite's settings (``tests.settings``:
the test Redis, found or started, and a broker on it), starts its own worker
and deletes what it wrote when it ends.

Each session runs this workflow::

    t_tick  after e0, andEvery e0          one instance per e0 fire
    t_next  after t_tick, andEvery t_tick  one per t_tick cascade
    t_once  after e1 and e2                one instance, once both fired
    t_never after e3 and "missing"         waits forever

and the soak checks that every e0 fire reached exactly one t_tick run with
its own kwargs (no trigger lost or merged), that no instance ran twice, and
that every session ends in the statuses the fires imply. It prints fire
throughput and latency percentiles and exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

import tests  # noqa: E402,F401  (the Celery app)

django.setup()

from tests.celery_app import app as celery_app  # noqa: E402
from tests.fault_tasks import CountingTask, events, events_key  # noqa: E402
from tests.managers import redis_client  # noqa: E402
from tests.worker import CeleryWorker  # noqa: E402
from triggers.manager import TriggerManager  # noqa: E402
from triggers.storages.cache import CacheStorageBackend  # noqa: E402

WORKFLOW = {
    "t_tick": {"after": ["e0"], "andEvery": "e0", "run": CountingTask.name},
    "t_next": {"after": ["t_tick"], "andEvery": "t_tick", "run": CountingTask.name},
    "t_once": {"after": ["e1", "e2"], "run": CountingTask.name},
    "t_never": {"after": ["e3", "missing"], "run": CountingTask.name},
}
TRIGGERS = ["e0", "e1", "e2", "e3"]
WEIGHTS = [5, 2, 2, 1]


def fire_share(args: tuple[int, list[str], int, int]) -> list[tuple[str, str, int, float]]:
    """One firing process: ``count`` fires spread over ``uids``, each a fresh
    manager and storage (as one web request would build). Returns
    ``(uid, trigger, sequence, seconds)`` per fire."""
    worker, uids, count, seed = args
    rng = random.Random(seed)
    done = []
    for seq in range(count):
        uid = uids[(seq * 7 + worker) % len(uids)]
        trigger = rng.choices(TRIGGERS, WEIGHTS)[0]
        started = time.perf_counter()
        TriggerManager(CacheStorageBackend(uid)).fire(trigger, {"w": worker, "seq": seq})
        done.append((uid, trigger, seq, time.perf_counter() - started))
    return done


def expected_statuses(fired: Counter[str]) -> dict[str, str]:
    statuses = {}
    for n in range(fired["e0"]):
        statuses[f"t_tick#{n}"] = statuses[f"t_next#{n}"] = "finished"
    if fired["e1"] or fired["e2"]:
        statuses["t_once#0"] = "finished" if fired["e1"] and fired["e2"] else "unstarted"
    if fired["e3"]:
        statuses["t_never#0"] = "unstarted"
    return statuses


def check_session(uid: str, fires: list[tuple[str, int, int]]) -> list[str]:
    """Problems found in one session (empty: all accounted for)."""
    problems = []
    storage = CacheStorageBackend(uid)
    fired = Counter(trigger for trigger, _, _ in fires)
    statuses = {name: inst.status for name, inst in storage.instances.items()}
    if statuses != expected_statuses(fired):
        problems.append(f"{uid}: statuses {statuses} != expected {expected_statuses(fired)}")
    if set(storage.latest_kwargs) & set(TRIGGERS) != set(fired):
        problems.append(f"{uid}: triggers recorded {sorted(storage.latest_kwargs)}")
    runs = events(uid, "runs")
    twice = [name for name, n in Counter(r["instance"] for r in runs).items() if n > 1]
    if twice:
        problems.append(f"{uid}: ran more than once: {twice}")
    sent = sorted((w, seq) for trigger, w, seq in fires if trigger == "e0")
    reached = sorted(
        (r["kwargs"]["e0"]["w"], r["kwargs"]["e0"]["seq"])
        for r in runs
        if r["instance"].startswith("t_tick#")
    )
    if sent != reached:
        lost = sorted(set(sent) - set(reached))
        problems.append(f"{uid}: e0 fires lost or duplicated (lost: {lost[:5]})")
    return problems


def settled(uid: str, fires: list[tuple[str, int, int]]) -> bool:
    storage = CacheStorageBackend(uid)
    fired = Counter(trigger for trigger, _, _ in fires)
    statuses = {name: inst.status for name, inst in storage.instances.items()}
    return statuses == expected_statuses(fired)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8, help="firing processes (8)")
    parser.add_argument("--sessions", type=int, default=50, help="sessions (50)")
    parser.add_argument("--fires", type=int, default=500, help="fires per process (500)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to drain (300)")
    options = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    uids = [f"soak-{run}-{n}" for n in range(options.sessions)]
    for uid in uids:
        TriggerManager(CacheStorageBackend(uid)).update_configuration(WORKFLOW)

    worker = CeleryWorker(celery_app, concurrency=options.concurrency, loglevel="warning")
    print(f"starting a worker ({options.concurrency} processes); log: {worker.log_path}")
    worker.start()
    try:
        total = options.processes * options.fires
        print(
            f"firing {total} triggers from {options.processes} processes "
            f"into {options.sessions} sessions"
        )
        context = multiprocessing.get_context("fork")
        shares = [(w, uids, options.fires, w) for w in range(options.processes)]
        started = time.perf_counter()
        with context.Pool(options.processes) as pool:
            results = pool.map(fire_share, shares)
        firing = time.perf_counter() - started

        per_session: dict[str, list[tuple[str, int, int]]] = {uid: [] for uid in uids}
        latencies = []
        for worker_id, result in enumerate(results):
            for uid, trigger, seq, seconds in result:
                per_session[uid].append((trigger, worker_id, seq))
                latencies.append(seconds)

        deadline = time.monotonic() + options.timeout
        pending = list(uids)
        while pending and time.monotonic() < deadline:
            pending = [uid for uid in pending if not settled(uid, per_session[uid])]
            if pending:
                time.sleep(0.2)
        drained = time.perf_counter() - started
        problems = [p for uid in uids for p in check_session(uid, per_session[uid])]
        runs = sum(len(events(uid, "runs")) for uid in uids)
    finally:
        worker.stop()
        redis = redis_client()
        for uid in uids:
            CacheStorageBackend(uid).delete()
            redis.delete(events_key(uid, "runs"))

    print(f"fires:       {total} in {firing:.1f}s = {total / firing:.0f} fires/s")
    print(
        f"fire latency: p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, "
        f"max {max(latencies) * 1000:.2f} ms"
    )
    print(f"task runs:   {runs}, all settled {drained:.1f}s after the first fire")
    if problems:
        print(f"FAILED: {len(problems)} problems")
        for problem in problems[:20]:
            print("  " + problem)
        return 1
    print("OK: zero lost triggers, zero duplicate runs, every session as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
