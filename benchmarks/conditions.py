"""What an ``if`` condition and a group add to a fire (SPEC §14), next to the
plain fire of case 1 (``benchmarks/run.py``): the first fire of a trigger in
a 20-task session, creating an instance that still waits for another
trigger. The variants take turns fire by fire, so each sees the same load.

Run: ``.venv/bin/python benchmarks/conditions.py`` (``--quick`` for fewer
fires). Needs Redis on 127.0.0.1:6379 (see benchmarks/settings.py).

Variants (each task ``tNN`` of the 20):

- plain: ``after: [sNN, gate]``;
- if: the same, with ``if: {sNN: 'kwargs.n >= 0 && kwargs.text == "hello"'}``
  (true for every fire, so the fire does the same work as the plain one);
- anyOf: ``after: [{anyOf: [sNN, altNN]}, gate]``;
- atLeast: ``after: [{atLeast: 2, of: [sNN, altNN, extraNN]}, gate]``.

Also printed: one CEL evaluation and one compile on their own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit
import uuid
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402  (configures Django first)
    TASK,
    BackToBack,
    Row,
    Sampler,
    cleanup,
    fire,
    manager_for,
    print_table,
)
from triggers import conditions  # noqa: E402

EXPRESSION = 'kwargs.n >= 0 && kwargs.text == "hello"'


def config(variant: str) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for i in range(20):
        s = f"s{i:02}"
        after: list[Any] = [s, "gate"]
        if variant == "anyOf":
            after = [{"anyOf": [s, f"alt{i:02}"]}, "gate"]
        elif variant == "atLeast":
            after = [{"atLeast": 2, "of": [s, f"alt{i:02}", f"extra{i:02}"]}, "gate"]
        tasks[f"t{i:02}"] = {"after": after, "run": TASK}
        if variant == "if":
            tasks[f"t{i:02}"]["if"] = {s: EXPRESSION}
    return tasks


VARIANTS = ("plain", "if", "anyOf", "atLeast")


def measure(fires: int, run_id: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Wall time and client CPU (ns) of ``fires`` first fires per variant."""
    sampler = Sampler()
    wall: dict[str, list[int]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[int]] = {v: [] for v in VARIANTS}
    session = 0
    while len(wall["plain"]) < fires:
        uids = {v: f"{run_id}-{v}-{session}" for v in VARIANTS}
        for variant, uid in uids.items():
            manager_for(uid).update_configuration(config(variant))
        for i in range(min(20, fires - len(wall["plain"]))):
            for variant, uid in uids.items():
                call = partial(fire, uid, f"s{i:02}", {"n": i, "text": "hello"})
                sampler.time(call, wall[variant])
                cpu[variant].append(sampler.cpu[-1])
        session += 1
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 fires per variant, not 1,000")
    args = parser.parse_args()
    fires = 200 if args.quick else 1000
    run_id = f"bench-cond-{uuid.uuid4().hex[:8]}"
    pings = BackToBack()
    try:
        manager_for(f"{run_id}-warm").update_configuration(config("plain"))
        fire(f"{run_id}-warm", "s00", {})  # connections, scripts
        pings.burst(300)
        wall, cpu = measure(fires, run_id)
        pings.burst(300)
    finally:
        cleanup(None)
    ping = pings.median_us
    base = statistics.median(wall["plain"]) / 1000
    rows = []
    for variant in VARIANTS:
        us = statistics.median(wall[variant]) / 1000
        rows.append(Row(f"fire, 20 tasks, {variant}", us, us / ping, None))
        rows.append(Row(f"  vs plain ({variant})", None, us / base, None, unit="x"))
        cpu_us = statistics.median(cpu[variant]) / 1000
        rows.append(Row(f"  client CPU ({variant})", None, cpu_us, None, unit="us"))
    program = conditions.program(EXPRESSION)
    kwargs = {"kwargs": {"n": 3, "text": "hello"}}
    evaluation = min(timeit.repeat(lambda: program.execute(kwargs), number=2000, repeat=5)) / 2000
    compile_once = min(
        timeit.repeat(lambda: conditions.cel.compile(EXPRESSION), number=200, repeat=5)
    )
    print(f"back-to-back PING: {ping:.1f} us; {fires} fires per variant, interleaved")
    compile_us = compile_once / 200 * 1e6
    print(f"one CEL evaluation: {evaluation * 1e6:.1f} us; one compile: {compile_us:.1f} us")
    print_table(rows)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
