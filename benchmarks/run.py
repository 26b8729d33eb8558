"""Time ``TriggerManager.fire()`` against real Redis, in Redis round trips.

Run it with ``make bench`` (or ``.venv/bin/python benchmarks/run.py``). Every
time is a median of many fires divided by the median of a back-to-back Redis
``PING`` (nothing in between) measured in the same run on the same client, so
results from machines of different speeds compare; the ratio to PINGs timed
between fires is printed beside it. See ``benchmarks/README.md`` for what each
case does. Exits non-zero when a target is missed or exactly-once scheduling
is violated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import redis  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from benchmarks import cases  # noqa: E402
from benchmarks.common import (  # noqa: E402
    TREE,
    BackToBack,
    Row,
    Sampler,
    cleanup,
    make_celery_app,
    median_us,
    print_table,
    settings,
)

#: Cases 1-3 and 5 run in this many interleaved slices.
ROUNDS = 4
WIDTHS = (10, 400, 2000)
#: Redis bytes of the questionnaire session after 100 pages when the width
#: work started (issue 11): the memory target is "not worse than that".
BYTES_BEFORE = 305_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows to FILE as JSON")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0

    def n(count: int) -> int:
        return max(10, int(count * scale))

    run_id = settings.RUN_ID
    started = time.monotonic()
    load = os.getloadavg()
    print(
        f"triggers fire() benchmark, run {run_id}: {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, triggers from {TREE}"
    )
    print(
        f"Redis {settings.REDIS_URL} (cache db {settings.CACHE_DB}, broker db "
        f"{settings.BROKER_DB}), django-redis cache, Celery broker on Redis, no worker, "
        f"redis-py {redis.__version__} with {'hiredis' if HIREDIS_AVAILABLE else 'its Python'} "
        "reply parser\n"
    )
    app = make_celery_app()
    names = ("idle", "publish", "unstarted", "scheduled", "width")
    samplers = {name: Sampler() for name in names}
    b2b = BackToBack()
    try:
        # Warm up: imports, script loading, connections, the broker's exchange.
        warm = Sampler()
        cases.case_no_schedule(warm, 100, f"{run_id}-warm")
        cases.case_publish(warm, 100, f"{run_id}-warm")
        for _ in range(1000):
            warm.ping()

        # The cases take turns, a slice each per round, so a shift in what
        # else the machine runs hits every case alike; back-to-back PINGs are
        # taken between the slices for the same reason.
        idle: list[int] = []
        publish: list[int] = []
        unstarted: tuple[list[int], list[int]] = ([], [])
        scheduled: tuple[list[int], list[int]] = ([], [])
        wide: dict[int, list[int]] = {w: [] for w in WIDTHS}
        for r in range(ROUNDS):
            tag = f"{run_id}-r{r}"
            b2b.burst(n(500))
            idle += cases.case_no_schedule(samplers["idle"], n(2000) // ROUNDS, tag)
            publish += cases.case_publish(samplers["publish"], n(2000) // ROUNDS, tag)
            b2b.burst(n(500))
            for variant, into in (("unstarted", unstarted), ("scheduled", scheduled)):
                small, large = cases.case_growth(
                    samplers[variant], variant, 10, 1000, n(1000) // ROUNDS, tag
                )
                into[0].extend(small)
                into[1].extend(large)
            b2b.burst(n(500))
            for width, samples in cases.case_width(
                samplers["width"], WIDTHS, n(1000) // ROUNDS, tag
            ).items():
                wide[width] += samples
        b2b.burst(n(500))
        concurrent_us, problems = cases.case_concurrent(n(500), run_id)
        b2b.burst(n(500))
        race_us, race_problems = cases.case_wide_race(400, max(1, n(5)), run_id)
        problems += race_problems
        b2b.burst(n(500))
        session_bytes, session_instances = cases.case_bytes(100, run_id)
    finally:
        cleanup(app)

    ping_us = b2b.median_us

    def row(case: str, samples: list[int], sampler: str, target: float | None, orig: str) -> Row:
        fire_us = median_us(samples)
        interleaved = fire_us / median_us(samplers[sampler].pings)
        return Row(case, fire_us, fire_us / ping_us, target, orig, interleaved)

    def cpu_us(sampler: str) -> float:
        return median_us(samplers[sampler].cpu)

    rows = [Row("Redis PING, back to back (the unit)", ping_us, 1.0, None)]
    rows.append(row("1. fire, schedules nothing (20 tasks)", idle, "idle", 4, "7.0"))
    rows.append(Row("1. client CPU per fire (process_time)", None, cpu_us("idle"), 200, unit="us"))
    rows.append(row("2. fire, publishes 1 Celery task", publish, "publish", 8, "13.7"))
    for label, (small, large), original in (
        ("unstarted", unstarted, "x5.5"),
        ("scheduled", scheduled, "x4.6"),
    ):
        rows.append(row(f"3. andEvery, 10 {label} instances", small, label, None, ""))
        rows.append(row(f"3. andEvery, 1000 {label} instances", large, label, None, ""))
        growth = median_us(large) / median_us(small)
        rows.append(Row(f"3. growth 10 -> 1000 {label}", None, growth, 1.3, original, unit="x"))
    rows.append(
        Row(
            f"4. {cases.PROCESSES} processes, andEvery, per fire",
            concurrent_us,
            concurrent_us / ping_us,
            5.5,
            "8.3",
        )
    )
    for width in WIDTHS:
        rows.append(
            row(f"5. fire into a task after {width} triggers", wide[width], "width", None, "")
        )
    width_growth = median_us(wide[WIDTHS[-1]]) / median_us(wide[WIDTHS[0]])
    rows.append(
        Row(f"5. width {WIDTHS[0]} -> {WIDTHS[-1]}", None, width_growth, 1.5, "x2.9", unit="x")
    )
    rows.append(
        Row(
            f"6. {cases.PROCESSES} processes, 400-trigger task, per fire",
            race_us,
            race_us / ping_us,
            8,
            "25",
        )
    )
    rows.append(
        Row(
            f"7. Redis bytes, questionnaire after 100 pages ({session_instances} instances)",
            None,
            session_bytes,
            BYTES_BEFORE,
            unit="B",
        )
    )
    print_table(rows)
    print(
        f"\nUnit: median of {len(b2b.pings)} back-to-back PINGs taken between the cases "
        f"({ping_us:.0f} us). 'interleaved' divides by PINGs timed just before each fire "
        f"on the same client ({median_us([p for s in samplers.values() for p in s.pings]):.0f} "
        "us), as earlier versions of this benchmark did."
    )
    if problems:
        print("exactly-once scheduling VIOLATED:\n  " + "\n  ".join(problems))
    else:
        print(
            f"exactly-once scheduling: OK ({cases.PROCESSES} x {n(500)} andEvery fires and "
            "the 400-trigger race: every instance scheduled once)"
        )
    load = os.getloadavg()
    print(
        f"took {time.monotonic() - started:.0f} s; load average now "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    failed = [r.case for r in rows if not r.passed]
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "tree": TREE,
                    "rows": [dataclasses.asdict(r) for r in rows],
                    "problems": problems,
                },
                out,
            )
    if failed or problems:
        print("FAILED: " + "; ".join(failed + problems))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
