"""The benchmark cases: each one times ``fire()`` through the public API in
one shape users have (see ``benchmarks/README.md`` for the list)."""

from __future__ import annotations

import multiprocessing
import random
import time
from functools import partial
from typing import Any

from benchmarks.common import (
    NULL_RUNNER,
    TASK,
    Sampler,
    fill_config,
    fire,
    manager_for,
    redis_client,
    session_keys,
)
from triggers.types import TaskInstance

PROCESSES = 4


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


# -- 1, 2: a fire in a 20-task session -------------------------------------------
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


# -- 3: andEvery growth ------------------------------------------------------------
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


# -- 5: width of a task's `after` ----------------------------------------------------
def wide_config(width: int) -> dict[str, dict[str, Any]]:
    after = [f"w{i:04}" for i in range(width)]
    return {"t_wide": {"after": after, "run": TASK, "using": NULL_RUNNER}, **fill_config("f", 19)}


class WideSessions:
    """Sessions whose task waits for ``width`` triggers, fired one at a time
    in a shuffled order; a fresh session starts when one is one fire away
    from done (the completing fire is not sampled, so every width times the
    same kind of fire)."""

    def __init__(self, width: int, run_id: str, seed: int) -> None:
        self.width, self.run_id = width, run_id
        self.random = random.Random(seed)
        self.sessions = 0
        self.pending: list[str] = []
        self.uid = ""

    def next_fire(self) -> partial[Any]:
        if len(self.pending) <= 1:
            self.uid = f"{self.run_id}-wide{self.width}-{self.sessions}"
            self.sessions += 1
            manager_for(self.uid).update_configuration(wide_config(self.width))
            self.pending = [f"w{i:04}" for i in range(self.width)]
            self.random.shuffle(self.pending)
        trigger = self.pending.pop()
        return partial(fire, self.uid, trigger, {"page": trigger, "answers": list(range(5))})


def case_width(
    sampler: Sampler, widths: tuple[int, ...], reps: int, run_id: str
) -> dict[int, list[int]]:
    """``reps`` fires into tasks of each width, taking turns fire by fire."""
    feeds = {w: WideSessions(w, run_id, seed=w) for w in widths}
    samples: dict[int, list[int]] = {w: [] for w in widths}
    for _ in range(reps):
        for width, feed in feeds.items():
            sampler.time(feed.next_fire(), samples[width])
    return samples


# -- 4 and 6: processes racing at one session -------------------------------------------
def _race_worker(
    uids: list[str], plan: list[list[str]], barrier: Any, results: Any, warmup: str
) -> None:
    for n in range(30):
        fire(warmup, "b", {"n": n})
    barrier.wait()
    start = time.perf_counter_ns()
    scheduled: list[str] = []
    for uid, triggers in zip(uids, plan, strict=True):
        for trigger in triggers:
            scheduled += [f"{uid}/{i.name}" for i in fire(uid, trigger, {"t": trigger})]
    results.put((start, time.perf_counter_ns(), scheduled))


def _race(uids: list[str], plans: list[list[list[str]]], run_id: str) -> tuple[float, list[str]]:
    """Start one spawned process per plan (a list of triggers per session),
    release them together; returns wall time per fire (µs) and every
    instance the fires returned as scheduled."""
    for p in range(len(plans)):
        manager_for(f"{run_id}-warm-{p}").update_configuration(_every_config("scheduled"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(uids, plan, barrier, results, f"{run_id}-warm-{p}"))
        for p, plan in enumerate(plans)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    fires = sum(len(t) for plan in plans for t in plan)
    wall_us = (max(o[1] for o in outcomes) - min(o[0] for o in outcomes)) / 1000
    return wall_us / fires, [name for o in outcomes for name in o[2]]


def case_concurrent(fires_per_process: int, run_id: str) -> tuple[float, list[str]]:
    """``PROCESSES`` processes fire ``tick`` (an ``andEvery`` task) and then
    ``done<p>`` at one session; returns the wall time per fire (µs) and a
    list of exactly-once violations (empty if none)."""
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
    plans = [[["tick"] * fires_per_process + [f"done{p}"]] for p in range(PROCESSES)]
    per_fire_us, returned = _race([uid], plans, f"{run_id}-c")

    problems = []
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
    if {r.partition("/")[2] for r in returned} != set(ticks) | set(alls):
        problems.append("the fires' returned instances differ from the stored scheduled ones")
    return per_fire_us, problems


def case_wide_race(width: int, sessions: int, run_id: str) -> tuple[float, list[str]]:
    """``PROCESSES`` processes fire the ``width`` distinct triggers of one
    task between them (each a shuffled share), session after session; the
    task must be scheduled exactly once per session with every trigger's
    kwargs."""
    uids = [f"{run_id}-widerace-{s}" for s in range(sessions)]
    rng = random.Random(width)
    plans: list[list[list[str]]] = [[] for _ in range(PROCESSES)]
    for uid in uids:
        manager_for(uid).update_configuration(wide_config(width))
        triggers = [f"w{i:04}" for i in range(width)]
        rng.shuffle(triggers)
        for p in range(PROCESSES):
            plans[p].append(triggers[p::PROCESSES])
    per_fire_us, returned = _race(uids, plans, f"{run_id}-w")

    problems = []
    expected = {f"{uid}/t_wide#0" for uid in uids}
    if sorted(returned) != sorted(expected):
        problems.append(
            f"wide race: fires returned {len(returned)} scheduled, expected one per session"
        )
    for uid in uids:
        instances = manager_for(uid).storage.instances
        wide = [i for i in instances.values() if i.config.name == "t_wide"]
        if len(wide) != 1 or wide[0].status != TaskInstance.STATUS_SCHEDULED:
            problems.append(f"wide race {uid}: {[(i.name, i.status) for i in wide]}")
        elif len(wide[0].kwargs) != width:
            problems.append(
                f"wide race {uid}: instance holds {len(wide[0].kwargs)} of {width} kwargs"
            )
    return per_fire_us, problems


# -- 7: memory ------------------------------------------------------------------------
QUESTIONNAIRE = {
    "t_importSubject": {"after": ["firstPageReceived"], "run": "triggers.testing.PassThruTask"},
    "t_importResponses": {
        "after": ["t_importSubject"],
        "andEvery": "pageReceived",
        "run": "triggers.testing.PassThruTask",
    },
    "t_scoreQuestionnaire": {
        "after": ["questionnaireComplete", "t_importSubject"],
        "unless": ["questionnaireWithdrawn"],
        "run": "triggers.testing.PassThruTask",
        "withParams": {"questionnaireComplete": {"scale": 5}},
    },
    "t_sendReport": {"after": ["t_scoreQuestionnaire"], "run": TASK},
}


def case_bytes(pages: int, run_id: str) -> tuple[int, int]:
    """Redis bytes (``MEMORY USAGE`` summed over its keys) of one
    questionnaire session after ``pages`` pages, every task run to the end on
    the threading runner; returns ``(bytes, instances)``."""
    from triggers.runners.threading import ThreadingTaskRunner

    uid = f"{run_id}-questionnaire"
    manager = manager_for(uid)
    config = {name: {**task, "using": "threading"} for name, task in QUESTIONNAIRE.items()}
    manager.update_configuration(config)

    def page(n: int) -> dict[str, Any]:
        return {"page": n, "responses": {f"q{n}_{j}": f"answer {j} of page {n}" for j in range(10)}}

    manager.fire("firstPageReceived", page(1))
    for n in range(2, pages + 1):
        manager.fire("pageReceived", page(n))
    manager.fire("questionnaireComplete", {})
    ThreadingTaskRunner.join_all()
    unfinished = [i.name for i in manager.storage.instances.values() if i.status != "finished"]
    if unfinished:
        raise SystemExit(f"bytes case: instances not finished: {unfinished[:5]}")
    client = redis_client()
    keys = session_keys(client, uid)
    if not keys:
        raise SystemExit(f"bytes case: no Redis keys found for session {uid!r}")
    total = sum(int(client.memory_usage(key) or 0) for key in keys)
    return total, len(manager.storage.instances)
