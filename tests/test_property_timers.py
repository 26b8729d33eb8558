"""Delayed fires and deadlines, as properties (SPEC §14): random workflows
(groups, ``if`` conditions, ``unless``, deadlines) where some fires are
delayed and applied by ``fire_due_timers`` at random later moments (passed
as ``now=``: nothing sleeps) end as the reference model
(tests/property_model.py) predicts, a delayed fire behaving as a plain fire
at the moment a sweep applies it; every timer is applied exactly once,
whether one sweeper or several threads and processes sweep while others
fire. On Redis and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.managers import init_spawned_process
from tests.property_model import (
    DEADLINE_SECONDS,
    Fire,
    Model,
    fire_sequences,
    kwarg_fires,
    model_statuses,
    split,
    workflows,
)
from tests.test_properties import (
    DISPATCHED,
    PROCESS_WORKFLOW,
    QueueRunner,
    _dispatch_lock,
    assert_scheduled_once,
    statuses,
    using_runner,
)
from triggers.manager import TriggerManager
from triggers.runners.base import force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.due_index import index_for
from triggers.timers import fire_due_timers

#: The storages of the run's Redis (a cache alias whose due index holds only
#: this test's timers) and PostgreSQL (tests/conftest.py's timer_storage).
ON_REDIS_AND_POSTGRES = pytest.mark.parametrize(
    "timer_storage", ["redis", "database"], indirect=True
)
TIMER_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: Delayed fires are due 0..59 s after a moment an hour from now; sweeps
#: happen half a second past a whole second (a ``delay=`` fire is due a few
#: microseconds after the second it aims at), and a last one long after.
SLOTS = 60
LAST_SWEEP = 1000.5


def _new_session(timer_storage: Callable[[str], Any], configuration: dict[str, Any]) -> Any:
    manager = TriggerManager(timer_storage(f"prop-timers-{uuid.uuid4().hex}"))
    manager.update_configuration(configuration)
    return manager


def _fire_later(manager: TriggerManager, fire: Fire, due: datetime, by_delay: bool) -> None:
    trigger, kwargs = split(fire)
    if by_delay:
        delay = (due - datetime.now(UTC)).total_seconds()
        assert manager.fire(trigger, kwargs, delay=delay) == []
    else:
        assert manager.fire(trigger, kwargs, at=due) == []


def _empty_index(storage: BaseTriggerStorage) -> None:
    """Empty the test's due index, so an example's sweeps see only its own
    timers whatever an earlier (maybe failed) example left behind."""
    index = index_for(storage)
    index.remove((e.uid, e.timer_id) for e in index.claim(float(2**33), 10**6))


# -- one sweeper, in order --------------------------------------------------------


@ON_REDIS_AND_POSTGRES
@settings(TIMER_SETTINGS, max_examples=40)
@given(
    configuration=workflows(with_conditions=True, with_deadlines=True),
    fires=kwarg_fires,
    data=st.data(),
)
def test_delayed_fires_and_deadlines_end_as_the_reference_model_predicts(
    timer_storage: Callable[[str], Any], configuration: dict[str, Any], fires: list[Fire], data: Any
) -> None:
    with using_runner("prop-queue"):
        check_delayed(timer_storage, configuration, fires, data)


def check_delayed(
    timer_storage: Callable[[str], Any], configuration: dict[str, Any], fires: list[Fire], data: Any
) -> None:
    manager = _new_session(timer_storage, configuration)
    storage = manager.storage
    _empty_index(storage)
    model = Model(configuration)
    base = datetime.now(UTC) + timedelta(hours=1)
    slots = iter(data.draw(st.permutations(range(SLOTS)), label="slots"))

    def sweep(at: float) -> None:
        applied = fire_due_timers(now=base + timedelta(seconds=at), storage=storage)
        QueueRunner.drain()
        assert applied == model.sweep(at), f"sweep at +{at}s"

    # Given random fires, some delayed to a random moment (by at= or
    # delay=), and sweeps at random moments in between
    for fire in fires:
        how = data.draw(st.sampled_from(["now", "at", "delay"]), label="how")
        if how == "now":
            manager.fire(*split(fire))
            QueueRunner.drain()
            model.fire(*split(fire))
        else:
            slot = next(slots)
            _fire_later(manager, fire, base + timedelta(seconds=slot), how == "delay")
            model.later(slot, *split(fire))
        if data.draw(st.booleans(), label="sweep"):
            sweep(data.draw(st.integers(0, SLOTS), label="at") + 0.5)
    # When a last sweep comes after every delayed fire is due
    sweep(LAST_SWEEP)

    # Then the session is as the model says, nothing ran twice, and only
    # deadlines are pending
    assert statuses(manager) == model.statuses()
    assert_scheduled_once(manager)
    pending = storage.timers
    assert all("instance" in t for t in pending)

    # And once the deadlines fall due, those of instances still unstarted
    # fire (in the order they fall due), the others are dropped
    if pending:
        order = [t["instance"] for t in pending]
        later = datetime.now(UTC) + timedelta(seconds=DEADLINE_SECONDS + 100)
        applied = fire_due_timers(now=later, storage=storage)
        QueueRunner.drain()
        assert applied == model.sweep_deadlines(order)
        assert statuses(manager) == model.statuses()
        assert_scheduled_once(manager)
        assert sorted(t["instance"] for t in storage.timers) == sorted(model.deadlines)
    # And the due index points at exactly the timers still pending
    assert index_for(storage).count() == len(storage.timers)


# -- several sweepers and firers at once --------------------------------------------


@ON_REDIS_AND_POSTGRES
@settings(TIMER_SETTINGS, max_examples=15)
@given(configuration=workflows(with_unless=False), fires=fire_sequences, data=st.data())
def test_delayed_fires_swept_by_several_threads_apply_once_as_the_model_predicts(
    timer_storage: Callable[[str], Any], configuration: dict[str, Any], fires: list[str], data: Any
) -> None:
    # Given a workflow whose end does not depend on the order of its fires
    # (no unless, no conditions), and the fires, some delayed, dealt out to
    # three threads while two more sweep at random moments, each thread
    # with its own storage object (as separate processes would have)
    uid = _new_session(timer_storage, configuration).storage.uid
    _empty_index(timer_storage(uid))
    base = datetime.now(UTC) + timedelta(hours=1)
    plans = [
        (fire, data.draw(st.one_of(st.none(), st.integers(0, SLOTS - 1)), label="slot"))
        for fire in fires
    ]
    sweeps = [
        sorted(data.draw(st.lists(st.integers(0, SLOTS), min_size=1, max_size=3), label="sweeps"))
        for _ in range(2)
    ]
    applied: list[int] = []
    barrier = threading.Barrier(5)

    def fire_all(share: list[tuple[str, int | None]]) -> None:
        manager = TriggerManager(timer_storage(uid))
        barrier.wait()
        for fire, slot in share:
            if slot is None:
                manager.fire(fire)
            else:
                _fire_later(manager, fire, base + timedelta(seconds=slot), by_delay=False)

    def sweep_all(moments: list[int]) -> None:
        storage = timer_storage(uid)
        barrier.wait()
        for at in moments:
            now = base + timedelta(seconds=at + 0.5)
            applied.append(fire_due_timers(now=now, storage=storage))

    # When they run at once, and a last sweep follows
    with using_runner("prop-threads"):
        threads = [threading.Thread(target=fire_all, args=(plans[i::3],)) for i in range(3)]
        threads += [threading.Thread(target=sweep_all, args=(m,)) for m in sweeps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        storage = timer_storage(uid)
        applied.append(fire_due_timers(now=base + timedelta(seconds=LAST_SWEEP), storage=storage))
        ThreadingTaskRunner.join_all()

        # Then every delayed fire was applied exactly once, and the session
        # ends as the sequential model says, each instance scheduled once
        assert sum(applied) == sum(1 for _, slot in plans if slot is not None)
        manager = TriggerManager(storage)
        assert statuses(manager) == model_statuses(configuration, fires)
        assert_scheduled_once(manager)
        assert storage.timers == []
        assert index_for(storage).count() == 0


# -- several processes ---------------------------------------------------------------


def _fire_and_sweep_in_child(
    kind: str,
    option: str,
    uid: str,
    plan: list[tuple[Fire, float | None]],
    sweeps: list[float],
    barrier: Any,
) -> tuple[int, dict[str, int]]:
    from tests.test_timer_sweepers import _setup_child

    force_runner("prop-threads")
    probe = _setup_child(kind, option)
    storage = type(probe)(uid, **probe.get_init_kwargs())
    manager = TriggerManager(storage)
    barrier.wait()
    applied = 0
    moments = iter(sweeps)
    for fire, due in plan:
        if due is None:
            manager.fire(*split(fire))
        else:
            trigger, kwargs = split(fire)
            manager.fire(trigger, kwargs, at=datetime.fromtimestamp(due, tz=UTC))
        at = next(moments, None)
        if at is not None:
            applied += fire_due_timers(now=datetime.fromtimestamp(at, tz=UTC), storage=storage)
    ThreadingTaskRunner.join_all()
    with _dispatch_lock:
        return applied, {name: n for (u, name), n in DISPATCHED.items() if u == uid}


@ON_REDIS_AND_POSTGRES
def test_delayed_fires_from_several_processes_sweeping_at_once_apply_once(
    timer_storage: Callable[[str], Any],
) -> None:
    # Given a workflow with andEvery, groups, a condition and cascades, and
    # 40 fires (half of them delayed) dealt out to three processes, each
    # also sweeping between its fires
    from tests.test_timer_sweepers import sweeper_target

    manager = _new_session(timer_storage, PROCESS_WORKFLOW)
    storage = manager.storage
    kind, option = sweeper_target(timer_storage)
    base = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    fires: list[Fire] = ["e0", ("e1", {"n": 2}), "e0", "e2", "e3", "e0", "e1", "e0"] * 5
    plan = [(fire, base + i if i % 2 else None) for i, fire in enumerate(fires)]
    shares = [plan[i::3] for i in range(3)]
    sweeps = [[base + 5.5 * (k + 1) + i for k in range(6)] for i in range(3)]
    context = multiprocessing.get_context("spawn")

    # When they run at once, and a last sweep follows
    with (
        context.Manager() as shared,
        context.Pool(3, initializer=init_spawned_process) as pool,
    ):
        barrier = shared.Barrier(3)
        args = [(kind, option, storage.uid, shares[i], sweeps[i], barrier) for i in range(3)]
        results = pool.starmap(_fire_and_sweep_in_child, args)
    with using_runner("prop-threads"):
        last = fire_due_timers(
            now=datetime.fromtimestamp(base + LAST_SWEEP, tz=UTC), storage=storage
        )

    # Then each of the 20 delayed fires was applied once, the session ends
    # as the model predicts, and every instance was scheduled exactly once
    assert last + sum(n for n, _ in results) == 20
    assert sum(n for n, _ in results) > 0, "the children's sweeps applied some"
    expected = model_statuses(PROCESS_WORKFLOW, fires)
    assert statuses(manager) == expected
    dispatched: Counter[str] = Counter()
    for _, result in results:
        dispatched.update(result)
    with _dispatch_lock:
        dispatched.update({n: c for (u, n), c in DISPATCHED.items() if u == storage.uid})
    assert set(dispatched.values()) == {1}
    assert set(dispatched) == set(expected)
    assert storage.timers == []
