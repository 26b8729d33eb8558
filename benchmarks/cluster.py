"""What a Redis Cluster costs a fire, next to one Redis: the plain fire of
case 1 (``benchmarks/run.py``: a fire that schedules nothing in a 20-task
session, tasks to a runner that does nothing), on the benchmark's Redis and
with ``TRIGGERS['REDIS_CLIENT']`` on a private three-master cluster. The two
take turns round by round, and each fire follows a ``PING`` to the master
that holds its session, so both see the same machine load.

Run: ``.venv/bin/python benchmarks/cluster.py`` (``--quick`` for fewer
fires). Needs Redis on 127.0.0.1:6379 (see benchmarks/settings.py) and
redis-server and redis-cli to start the cluster (tests/redis_cluster.py;
``TRIGGERS_TEST_CLUSTER_URL`` points at a running one instead).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402

from benchmarks.common import TASK, cleanup, fire, manager_for  # noqa: E402  (Django first)
from tests.redis_cluster import ensure_cluster_url  # noqa: E402
from triggers.storages.cache import CacheStorageBackend  # noqa: E402

CONFIG = {f"t{i:02}": {"after": [f"s{i:02}", "gate"], "run": TASK} for i in range(20)}


def round_of(label: str, fires: int, samples: dict[str, list[list[int]]]) -> None:
    """``fires`` plain fires into a new session, timed with their PINGs."""
    uid = f"cluster-bench-{label}-{uuid.uuid4().hex[:8]}"
    manager_for(uid).update_configuration(CONFIG)
    storage = CacheStorageBackend(uid)
    client: Any = storage.redis_client
    if callable(getattr(client, "get_node_from_key", None)):
        client = client.get_node_from_key(f"{storage._base}:config").redis_connection
    wall, pings, cpu = samples.setdefault(label, [[], [], []])
    for n in range(fires):
        start = time.perf_counter_ns()
        client.ping()
        pings.append(time.perf_counter_ns() - start)
        used, start = time.process_time_ns(), time.perf_counter_ns()
        fire(uid, f"s{n % 20:02}", {"n": n})
        wall.append(time.perf_counter_ns() - start)
        cpu.append(time.process_time_ns() - used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 fires a round, not 250")
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    fires = 100 if options.quick else 250
    cluster = {**settings.TRIGGERS, "REDIS_CLIENT": ensure_cluster_url()}
    samples: dict[str, list[list[int]]] = {}
    try:
        for _ in range(options.rounds):
            round_of("one Redis", fires, samples)
            with override_settings(TRIGGERS=cluster):
                round_of("3-master cluster", fires, samples)
    finally:
        cleanup(None)
    print(f"{'':18} {'fire (median)':>14} {'PING':>8} {'fire/PING':>10} {'client CPU':>11}")
    for label, (wall, pings, cpu) in samples.items():
        med: list[Any] = [statistics.median(s) / 1000 for s in (wall, pings, cpu)]
        print(
            f"{label:18} {med[0]:11.0f} us {med[1]:5.0f} us {med[0] / med[1]:10.1f}"
            f" {med[2]:8.0f} us   ({len(wall)} fires)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
