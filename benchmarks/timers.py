"""What ``fire_due_timers`` costs per due timer, with 10 and with 100,000
sessions holding timers that are not due: the cost must not grow with the
number of sessions (SPEC §14).

Run: ``.venv/bin/python benchmarks/timers.py`` (about a minute; ``--quick``
for fewer rounds). Needs Redis on 127.0.0.1:6379 (see benchmarks/settings.py).

Each round stores ``DUE`` delayed fires in as many sessions (through
``manager.fire(..., delay=...)``), then times one sweep that applies them
all; the figure is that time divided by ``DUE``, as a ratio to a
back-to-back Redis PING measured in the same run. Each applied timer
schedules one instance (on a runner that does nothing).

The sessions whose timers are not due are written to the due index exactly
as ``fire(delay=...)`` writes them (an entry per timer, scored by its due
time) but hold no session state: a sweep never reads a session whose timer
is not due, which is the point being measured, and writing 100,000 real
sessions would take minutes of the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from django.conf import settings  # noqa: E402

from benchmarks.common import (  # noqa: E402  (configures Django first)
    NULL_RUNNER,
    TASK,
    BackToBack,
    Row,
    cleanup,
    print_table,
)
from triggers.manager import TriggerManager  # noqa: E402
from triggers.storages.cache import CacheStorageBackend  # noqa: E402
from triggers.storages.due_index import DueEntry, index_for  # noqa: E402
from triggers.timers import fire_due_timers  # noqa: E402

CONFIG = {"t_remind": {"after": ["remind"], "run": TASK, "using": NULL_RUNNER}}
#: Due timers applied per timed sweep.
DUE = 200
#: Index entries written per pipeline when filling the idle sessions.
FILL_BATCH = 5000


def fill_idle(count: int, probe: CacheStorageBackend) -> None:
    """``count`` sessions with a timer due in a year, in the due index."""
    index = index_for(probe)
    later = (datetime.now(UTC) + timedelta(days=365)).timestamp()
    locator = {"storage": "cache", "options": probe.get_init_kwargs(), "manager": None}
    for start in range(0, max(count, 0), FILL_BATCH):
        index.add(
            DueEntry(f"idle-{n}", uuid.uuid4().hex, later + n, locator)
            for n in range(start, min(count, start + FILL_BATCH))
        )


def one_round(cache: str, probe: CacheStorageBackend) -> float:
    """Store DUE delayed fires, sweep once; microseconds per applied timer."""
    run = uuid.uuid4().hex[:8]
    for n in range(DUE):
        manager = TriggerManager(CacheStorageBackend(f"due-{run}-{n}", cache=cache))
        manager.update_configuration(CONFIG)
        manager.fire("remind", {"n": n}, delay=1)
    now = datetime.now(UTC) + timedelta(seconds=2)
    start = time.perf_counter_ns()
    applied = fire_due_timers(now=now, storage=probe)
    elapsed = time.perf_counter_ns() - start
    if applied != DUE:
        raise AssertionError(f"the sweep applied {applied} timers, expected {DUE}")
    return elapsed / DUE / 1000


SIZES = (10, 100_000)
# A cache alias per size (own key prefix, so its own due index), declared
# before any cache is used.
for _idle in SIZES:
    settings.CACHES[f"timers-{_idle}"] = {
        **settings.CACHES["default"],
        "KEY_PREFIX": f"{settings.CACHE_PREFIX}-timers-{_idle}",
    }


def index_with(idle: int) -> tuple[str, CacheStorageBackend]:
    """The alias holding ``idle`` sessions' timers that are not due."""
    alias = f"timers-{idle}"
    probe = CacheStorageBackend("bench-timers-probe", cache=alias)
    fill_idle(idle, probe)
    return alias, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two rounds per size instead of six")
    args = parser.parse_args()
    rounds = 2 if args.quick else 6
    pings = BackToBack()
    small: list[float] = []
    large: list[float] = []
    try:
        sizes = [(index_with(SIZES[0]), small), (index_with(SIZES[1]), large)]
        # Rounds alternate between the two sizes, so both see the same load.
        for _ in range(rounds):
            for (alias, probe), found in sizes:
                pings.burst(200)
                found.append(one_round(alias, probe))
    finally:
        cleanup(None)
    ping = pings.median_us
    small_us, large_us = statistics.median(small), statistics.median(large)
    rows = [
        Row("sweep per due timer, 10 sessions with timers", small_us, small_us / ping, None),
        Row("sweep per due timer, 100,000 sessions", large_us, large_us / ping, None),
        Row("growth 10 -> 100,000 sessions", large_us, large_us / small_us, 1.3, unit="x"),
    ]
    print(f"back-to-back PING: {ping:.1f} us; {DUE} due timers per sweep, {rounds} rounds")
    print_table(rows)


if __name__ == "__main__":
    main()
