"""The workflow rules of triggers.engine on a session held in memory: no
Redis, no runner, no lock. The property tests' reference model is checked
against the same rules here, fast."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_properties import fire_sequences, model_statuses, workflows
from triggers import engine
from triggers.exceptions import InstanceStateError
from triggers.types import TaskInstance, validate_configuration

RUN = "tests.noop"


def session(configuration: dict[str, Any]) -> engine.MemorySession:
    return engine.MemorySession(validate_configuration(configuration))


def fire(s: engine.MemorySession, trigger: str, **kwargs: Any) -> engine.Effects:
    return s.apply(engine.apply_trigger(s, trigger, kwargs))


def statuses(s: engine.MemorySession) -> dict[str, str]:
    return {n: i.status for n, i in s.instances.items()}


def test_operations_declare_what_they_load() -> None:
    # A fire needs the trigger's part of the session, a worker step the
    # instance, a finish both (its cascade fires the task's name).
    assert engine.load_for_fire("go") == engine.Load(triggers=("go",))
    assert engine.load_for_instance("t#3") == engine.Load(instances=("t#3",))
    assert engine.load_for_finish("t#3") == engine.Load(instances=("t#3",), triggers=("t",))


def test_a_first_fire_creates_instance_zero_and_a_complete_one_is_ready() -> None:
    # Given a task after a and b
    s = session({"t": {"after": ["a", "b"], "run": RUN}})
    # When a fires, then b
    first = fire(s, "a", x=1)
    second = fire(s, "b", y=2)
    # Then #0 was created by the first fire (which asks for the seed check)
    # and is ready after the second, holding each trigger's kwargs
    assert [i.name for i in first.created] == ["t#0"] and first.first_of == ["t"]
    assert first.ready == [] and second.created == []
    assert [i.name for i in second.ready] == ["t#0"]
    assert s.instances["t#0"].kwargs == {"a": {"x": 1}, "b": {"y": 2}}
    assert s.latest_kwargs == {"a": {"x": 1}, "b": {"y": 2}}


def test_a_new_instance_is_seeded_with_the_latest_kwargs_of_earlier_fires() -> None:
    # Given an andEvery task whose "a" fired twice before its first tick
    s = session({"t": {"after": ["a"], "andEvery": "tick", "run": RUN}})
    fire(s, "a", n=1)
    fire(s, "a", n=2)
    # When it ticks twice (each tick a new instance once none waits)
    fire(s, "tick", k=1)
    fx = fire(s, "tick", k=2)
    # Then the new instance holds the latest "a", not the first
    assert [i.name for i in fx.created] == ["t#1"]
    assert s.instances["t#1"].kwargs == {"a": {"n": 2}, "tick": {"k": 2}}
    assert statuses(s) == {"t#0": "unstarted", "t#1": "unstarted"}  # not dispatched here


def test_unless_abandons_and_an_abandoned_instance_is_never_ready() -> None:
    s = session({"t": {"after": ["a", "b"], "unless": ["stop"], "run": RUN}})
    fire(s, "a")
    fx = fire(s, "stop")
    assert [i.name for i in fx.abandoned] == ["t#0"]
    assert fire(s, "b").ready == []
    assert statuses(s) == {"t#0": "abandoned"}


def test_replay_and_skip_accept_only_failed_instances() -> None:
    s = session({"t": {"after": ["a"], "run": RUN}, "u": {"after": ["t"], "run": RUN}})
    inst = fire(s, "a").ready[0]
    # A scheduled instance can be neither replayed nor skipped
    with pytest.raises(InstanceStateError):
        engine.replay_failed(s, inst, None)
    with pytest.raises(InstanceStateError):
        engine.skip_failed(s, inst, cascade=False, result={})
    # A failed one replays into a ready clone numbered next, kwargs replaced
    inst.set_status(TaskInstance.STATUS_FAILED)
    fx = s.apply(engine.replay_failed(s, inst, {"a": {"v": 9}}))
    clone = fx.ready[0]
    assert (clone.name, clone.kwargs, clone.metadata["parent"]) == ("t#1", {"a": {"v": 9}}, "t#0")
    assert inst.status == "replayed"
    # A failed clone skipped with cascade fires its task's name
    clone.set_status(TaskInstance.STATUS_FAILED)
    fx = s.apply(engine.skip_failed(s, clone, cascade=True, result={"r": 1}))
    assert [i.name for i in fx.ready] == ["u#0"]
    assert s.instances["u#0"].kwargs == {"t": {"r": 1}}


def test_a_claim_runs_once_waits_for_a_live_worker_and_takes_over_a_dead_one() -> None:
    s = session({"t": {"after": ["a"], "run": RUN}})
    inst = fire(s, "a").ready[0]
    inst.set_status(TaskInstance.STATUS_SCHEDULED)
    got, fx = engine.claim(inst, True, 0, "tok1", 5000)
    assert got.outcome == "run" and fx.leases_set == {"t#0": ("tok1", 5000)}
    assert engine.claim(inst, True, 1200, "tok2", 5000)[0] == engine.Claim("busy", wait_ms=1200)
    got, _ = engine.claim(inst, True, 0, "tok2", 5000)  # its lease expired
    assert got.outcome == "run" and inst.metadata["takeovers"] == 1
    assert engine.owns(inst, "tok2") and not engine.owns(inst, "tok1")
    assert engine.claim(None, False, 0, "t", 1)[0].reason == "the session has vanished"


def test_a_finish_stores_the_result_frees_the_lease_and_cascades() -> None:
    s = session({"t": {"after": ["a"], "run": RUN}, "u": {"after": ["t"], "run": RUN}})
    inst = fire(s, "a").ready[0]
    engine.claim(inst, True, 0, "tok", 1000)
    fx = s.apply(engine.finish(s, inst, {"r": 2}, {"log_level": 20}))
    assert inst.status == "finished" and inst.token is None
    assert inst.metadata["result"] == {"r": 2} and fx.leases_dropped == {"t#0"}
    assert [i.name for i in fx.ready] == ["u#0"]


def run_model(configuration: dict[str, Any], fires: list[str]) -> dict[str, str]:
    """The rules driven as the reference model runs: ready instances run
    first in, first out, each finish cascading."""
    s = session(configuration)
    queue: deque[TaskInstance] = deque()
    for trigger in fires:
        queue.extend(fire(s, trigger).ready)
        while queue:
            inst = queue.popleft()
            engine.claim(inst, True, 0, "tok", 1000)
            queue.extend(s.apply(engine.finish(s, inst, {}, {})).ready)
    return statuses(s)


@settings(max_examples=300, deadline=None)
@given(configuration=workflows(), fires=fire_sequences)
def test_the_reference_model_and_the_engine_agree(
    configuration: dict[str, Any], fires: list[str]
) -> None:
    assert run_model(configuration, fires) == model_statuses(configuration, fires)


@given(configuration=workflows(), fires=fire_sequences, data=st.data())
@settings(max_examples=100, deadline=None)
def test_the_engine_ends_the_same_in_any_fire_order(
    configuration: dict[str, Any], fires: list[str], data: Any
) -> None:
    # Only fires without unless commute; compare orders of the same fires
    order = data.draw(st.permutations(fires))
    if any("unless" in d for d in configuration.values()):
        assert run_model(configuration, order) == model_statuses(configuration, order)
    else:
        assert run_model(configuration, order) == run_model(configuration, fires)
