"""Bad input and abuse: fuzzed configurations, trigger names, kwargs and
session UIDs are either accepted and work, or rejected with the library's
own exceptions, leaving the session untouched. Keys cannot collide or be
injected, kwargs have a size limit, and nothing is ever unpickled."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triggers import conf
from triggers.exceptions import InvalidTriggerError, TriggersError
from triggers.manager import TriggerManager
from triggers.runners.base import force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.testing import DevNullTask

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Values JSON cannot hold, or that are the wrong shape anywhere.
odd_values = st.one_of(
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=4),
    st.builds(object),
    st.tuples(st.integers()),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
    st.just(float("nan")),
    st.just(float("inf")),
)
anything = json_values | odd_values
names = st.one_of(
    st.sampled_from(["go", "t_a", "t_b", "a:b", "x#1", "é✓", " spaced "]),
    st.text(max_size=12),
    st.text(min_size=195, max_size=260),
    st.sampled_from(["", "a\x1fb", "line\nbreak", "nul\x00", "\x7f", "tab\t"]),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
)
trigger_lists = st.one_of(st.lists(names, max_size=3), names, anything)
directives = st.one_of(
    anything,
    st.fixed_dictionaries(
        {},
        optional={
            "after": trigger_lists,
            "run": st.sampled_from([DevNullTask.name, "nowhere.Task", "", 7]),
            "andEvery": names,
            "unless": trigger_lists,
            "withParams": anything | st.dictionaries(names, anything, max_size=2),
            "using": st.sampled_from(["threading", "celery", "no-such-runner", 5]),
            "afterr": anything,
            "meta": json_values,
        },
    ),
)
configurations = st.one_of(
    anything,
    st.dictionaries(names, directives, max_size=3),
    st.dictionaries(names | st.tuples(st.integers()) | st.frozensets(st.integers()), anything),
)


@contextmanager
def threaded_tasks() -> Iterator[None]:
    previous = force_runner("threading")
    try:
        yield
    finally:
        ThreadingTaskRunner.join_all()
        force_runner(previous)


def new_manager() -> TriggerManager:
    return TriggerManager(CacheStorageBackend(f"fuzz-{uuid.uuid4().hex}"))


def library_error_or_none(operation: Any) -> TriggersError | None:
    """Run ``operation``; return the library error it raised, fail on any other."""
    try:
        operation()
    except TriggersError as exc:
        return exc
    return None


@FUZZ
@given(configuration=configurations, fires=st.lists(names, max_size=3))
def test_any_configuration_is_accepted_and_works_or_rejected_cleanly(
    configuration: Any, fires: list[Any]
) -> None:
    manager = new_manager()
    manager.update_configuration({"t_base": {"after": ["go"], "run": DevNullTask.name}})
    before = manager.storage.debug_repr()

    # When a fuzzed configuration is applied
    error = library_error_or_none(lambda: manager.update_configuration(configuration))

    if error is not None:
        # Then a rejection changes nothing
        assert manager.storage.debug_repr() == before
        return
    # Then an accepted one is stored and can be fired at: each fire works or
    # fails with a library error (a bad trigger name, a runner that is not
    # there), and tasks that became ready ran
    assert set(configuration) <= set(manager.storage.tasks)
    with threaded_tasks():
        for trigger in fires:
            library_error_or_none(lambda trigger=trigger: manager.fire(trigger))
    for inst in manager.storage.instances.values():
        assert inst.status in ("unstarted", "finished", "abandoned"), inst


@FUZZ
@given(trigger=names, kwargs=st.one_of(anything, st.dictionaries(st.text(max_size=5), anything)))
def test_any_fire_is_recorded_exactly_or_rejected_cleanly(trigger: Any, kwargs: Any) -> None:
    manager = new_manager()
    manager.update_configuration({"t_a": {"after": ["go", "stop"], "run": DevNullTask.name}})
    manager.fire("stop", {"n": 1})
    before = manager.storage.debug_repr()

    with threaded_tasks():
        error = library_error_or_none(lambda: manager.fire(trigger, kwargs))

    if error is not None:
        # A library error that is also the builtin callers expect, and a
        # session exactly as before
        assert isinstance(error, TypeError | ValueError)
        assert manager.storage.debug_repr() == before
    else:
        # Recorded exactly as JSON would carry it
        expected = json.loads(json.dumps(kwargs)) if kwargs is not None else {}
        assert manager.storage.latest_kwargs[trigger] == expected


@FUZZ
@given(uid=names)
def test_any_session_uid_is_accepted_or_rejected_with_a_library_error(uid: Any) -> None:
    try:
        storage = CacheStorageBackend(uid)
    except TriggersError as exc:
        assert isinstance(exc, TypeError | ValueError)
        return
    manager = TriggerManager(storage)
    manager.fire("ping", {"uid": uid})
    assert TriggerManager(CacheStorageBackend(uid)).storage.latest_kwargs["ping"] == {"uid": uid}


def all_keys(storage: CacheStorageBackend) -> set[str]:
    return {*storage._keys, f"{storage._base}:commits", f"{storage._base}:lock"}


@FUZZ
@given(
    first=st.text(alphabet=":#ab1", min_size=1, max_size=8),
    second=st.text(alphabet=":#ab1", min_size=1, max_size=8),
)
def test_no_two_session_uids_share_a_key(first: str, second: str) -> None:
    if first == second:
        return
    one, two = CacheStorageBackend(first), CacheStorageBackend(second)
    assert not all_keys(one) & all_keys(two)
    # Lease keys are the lease prefix plus an instance name ("task#n"): a
    # uid's prefix can never be another uid's lease prefix or key
    for key in all_keys(two):
        assert not key.startswith(one._lease_prefix)


def test_uids_that_naive_concatenation_would_merge_stay_apart(unique_uid):
    # Given uid "<u>" and uid "<u>:lease:t#0": with keys built as
    # "triggers:" + uid + ":" + part, the second's parts would live under the
    # first's lease keys
    a = TriggerManager(CacheStorageBackend(unique_uid))
    b = TriggerManager(CacheStorageBackend(f"{unique_uid}:lease:t#0"))
    naive = f"triggers:{unique_uid}:lease:t#0:meta"
    assert naive.startswith(f"triggers:{unique_uid}:lease:")

    # When both are used
    a.update_configuration({"t": {"after": ["x", "y"], "run": DevNullTask.name}})
    a.fire("x", {"from": "a"})
    b.fire("y", {"from": "b"})

    # Then neither sees the other's state
    assert a.storage.latest_kwargs == {"x": {"from": "a"}}
    assert b.storage.latest_kwargs == {"y": {"from": "b"}}
    assert b.storage.tasks == {} and list(b.storage.instances) == []
    assert isinstance(a.storage, CacheStorageBackend)
    assert isinstance(b.storage, CacheStorageBackend)
    assert not all_keys(a.storage) & all_keys(b.storage)


@pytest.mark.parametrize("name", ["a\x1fb", "new\nline", "nul\x00", "x" * 201])
def test_names_that_could_forge_keys_or_index_entries_are_rejected(unique_uid, name):
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    with pytest.raises(InvalidTriggerError):
        manager.fire(name)
    with pytest.raises(TriggersError):
        manager.update_configuration({name: {"after": ["go"], "run": DevNullTask.name}})
    with pytest.raises(TriggersError):
        CacheStorageBackend(name if len(name) < 200 else "u" * 251)
    assert manager.storage.latest_kwargs == {}


def test_kwargs_over_the_size_limit_are_rejected_with_a_clear_error(unique_uid):
    # Given a 1 KB limit
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t": {"after": ["big"], "run": DevNullTask.name}})
    with override_settings(TRIGGERS={**conf.DEFAULTS, "MAX_KWARGS_BYTES": 1024}):
        # When a fire carries 2 KB, it is refused, naming the setting
        with pytest.raises(InvalidTriggerError, match="MAX_KWARGS_BYTES"):
            manager.fire("big", {"blob": "x" * 2048})
        # and nothing was recorded; just under the limit is fine
        assert manager.storage.latest_kwargs == {}
        with threaded_tasks():
            manager.fire("big", {"blob": "x" * 900})
    assert manager.storage.latest_kwargs["big"] == {"blob": "x" * 900}


def test_the_default_kwargs_limit_is_256_kib(unique_uid):
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    assert conf.DEFAULTS["MAX_KWARGS_BYTES"] == 256 * 1024
    with pytest.raises(InvalidTriggerError, match="262144"):
        manager.fire("big", {"blob": "x" * (256 * 1024)})


class _Planted:
    """Would create a file if it were ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


def test_session_state_is_never_unpickled(unique_uid, redis_client, tmp_path):
    # Given a session whose instance record an attacker replaced with a pickle
    storage = CacheStorageBackend(unique_uid)
    manager = TriggerManager(storage)
    manager.update_configuration({"t": {"after": ["a", "b"], "run": DevNullTask.name}})
    manager.fire("a")
    marker = tmp_path / "unpickled"
    redis_client.hset(f"{storage._base}:instances", "t#0", pickle.dumps(_Planted(marker)))

    # When the session is read and fired at
    with pytest.raises(ValueError):
        manager.storage.instances  # noqa: B018
    with pytest.raises(ValueError):
        manager.fire("b")

    # Then the payload was never loaded
    assert not marker.exists()
