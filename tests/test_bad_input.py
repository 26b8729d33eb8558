"""Bad input (SPEC §2, §3, §6) raises the library's typed errors, naming what
was wrong, and leaves the stored session exactly as it was, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.contract_backends import (
    BAD_CONFIGS,
    make_storage,
    new_uid,
    populate,
    raw_state,
    settle,
)
from triggers import conf
from triggers.exceptions import (
    ConfigurationError,
    InvalidTriggerError,
    InvalidTriggerTypeError,
    TriggersError,
)
from triggers.manager import TriggerManager
from triggers.storages.cache import CacheStorageBackend
from triggers.testing import FailingTask


def override_triggers(**values: Any) -> Any:
    from django.conf import settings
    from django.test import override_settings

    return override_settings(TRIGGERS={**settings.TRIGGERS, **values})


pytestmark = pytest.mark.usefixtures("threaded")


# One backend per code path: the Redis layout and the generic whole-document
# path (the storage contract suite covers the rest).
@pytest.fixture(name="kind", params=["builtin-redis", "locmem"])
def kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="populated")
def populated_fixture(kind: str) -> TriggerManager:
    """A session with configuration, fired triggers and finished, failed and
    unstarted instances."""
    manager = TriggerManager(make_storage(kind, new_uid("bad")))
    populate(manager)
    manager.update_configuration({"t_failing": {"after": ["a"], "run": FailingTask.name}})
    manager.fire("a", {"n": 2})
    settle()
    assert manager.storage["t_failing#0"].status == "failed"
    return manager


def assert_rejected_without_change(
    manager: TriggerManager,
    operation: Callable[[], Any],
    error: type[BaseException],
    named: str,
) -> BaseException:
    before_raw = raw_state(manager.storage)
    before = manager.storage.debug_repr()
    with pytest.raises(error) as info:
        operation()
    assert isinstance(info.value, TriggersError), f"{type(info.value)} is not a library error"
    assert named in str(info.value)
    settle()
    assert raw_state(manager.storage) == before_raw
    assert manager.storage.debug_repr() == before
    return info.value


# -- configuration (SPEC §2) ---------------------------------------------------


@pytest.mark.parametrize(
    "configuration, task, directive",
    [(case[1], case[2], case[3]) for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_configuration_changes_nothing_on_any_backend(
    populated: TriggerManager, configuration: dict[Any, Any], task: str, directive: str | None
) -> None:
    error = assert_rejected_without_change(
        populated,
        lambda: populated.update_configuration(configuration),
        ConfigurationError,
        repr(task),
    )
    assert isinstance(error, ConfigurationError) and error.directive == directive


# -- fire (SPEC §3) ------------------------------------------------------------

BAD_TRIGGER_NAMES = [
    pytest.param(None, InvalidTriggerTypeError, "NoneType", id="none"),
    pytest.param(5, InvalidTriggerTypeError, "int", id="int"),
    pytest.param(b"a", InvalidTriggerTypeError, "bytes", id="bytes"),
    pytest.param(["a"], InvalidTriggerTypeError, "list", id="list"),
    pytest.param("", InvalidTriggerError, "must not be empty", id="empty"),
    pytest.param("a\x1fb", InvalidTriggerError, "control characters", id="control-char"),
    pytest.param("a" * 201, InvalidTriggerError, "limit is 200", id="too-long"),
]


@pytest.mark.parametrize("name, error, text", BAD_TRIGGER_NAMES)
def test_bad_trigger_names(
    populated: TriggerManager, name: Any, error: type[BaseException], text: str
) -> None:
    exc = assert_rejected_without_change(
        populated, lambda: populated.fire(name, {"v": 1}), error, "trigger name"
    )
    assert text in str(exc)


BAD_KWARGS = [
    pytest.param("responses", InvalidTriggerTypeError, id="string"),
    pytest.param(["a", 1], InvalidTriggerTypeError, id="list"),
    pytest.param(5, InvalidTriggerTypeError, id="int"),
    pytest.param({1: "a"}, InvalidTriggerTypeError, id="non-string-key"),
    pytest.param({"o": object()}, InvalidTriggerTypeError, id="not-json"),
    pytest.param({"s": {1, 2}}, InvalidTriggerTypeError, id="set-value"),
    pytest.param({"f": float("nan")}, InvalidTriggerTypeError, id="nan"),
    pytest.param({"big": "x" * (256 * 1024)}, InvalidTriggerError, id="too-large"),
]


@pytest.mark.parametrize("kwargs, error", BAD_KWARGS)
def test_bad_trigger_kwargs(
    populated: TriggerManager, kwargs: Any, error: type[BaseException]
) -> None:
    # Trigger `b` would make t_waiting#0 run: a rejected fire must not
    assert_rejected_without_change(populated, lambda: populated.fire("b", kwargs), error, "'b'")
    assert populated.storage["t_waiting#0"].status == "unstarted"


def test_the_kwargs_size_limit_comes_from_settings(populated: TriggerManager) -> None:
    assert conf.get("MAX_KWARGS_BYTES") == 256 * 1024
    # Just under the limit is accepted
    populated.fire("big", {"x": "y" * (256 * 1024 - 100)})
    assert "big" in populated.storage.latest_kwargs


# -- manager operations (SPEC §6) ------------------------------------------------

BAD_OPERATIONS = [
    pytest.param(
        lambda m: m.replay_failed_instance("t_failing#0", replacement_kwargs="a"),
        InvalidTriggerTypeError,
        "t_failing#0",
        id="replay-kwargs-string",
    ),
    pytest.param(
        lambda m: m.replay_failed_instance("t_failing#0", replacement_kwargs={"a": object()}),
        InvalidTriggerTypeError,
        "t_failing#0",
        id="replay-kwargs-not-json",
    ),
    pytest.param(
        lambda m: m.replay_failed_instance("t_base#0"),
        ValueError,
        "t_base#0",
        id="replay-not-failed",
    ),
    pytest.param(
        lambda m: m.skip_failed_instance("t_failing#0", cascade=True, result=["r"]),
        InvalidTriggerTypeError,
        "t_failing#0",
        id="skip-result-list",
    ),
    pytest.param(
        lambda m: m.skip_failed_instance("t_waiting#0"),
        ValueError,
        "t_waiting#0",
        id="skip-not-failed",
    ),
    pytest.param(
        lambda m: m.update_instance_status("t_waiting#0", "done"),
        InvalidTriggerError,
        "'done'",
        id="status-unknown",
    ),
    pytest.param(
        lambda m: m.update_instance_status("t_waiting#0", "finished", metadata={"o": object()}),
        InvalidTriggerTypeError,
        "t_waiting#0",
        id="status-metadata-not-json",
    ),
    pytest.param(
        lambda m: m.update_instance_status(
            "t_waiting#0", "finished", cascade=True, cascade_kwargs="x"
        ),
        InvalidTriggerTypeError,
        "t_waiting#0",
        id="status-cascade-kwargs-string",
    ),
    pytest.param(
        lambda m: m.update_instance_metadata("t_waiting#0", ["x"]),
        InvalidTriggerTypeError,
        "t_waiting#0",
        id="metadata-not-mapping",
    ),
    pytest.param(
        lambda m: m.update_instance_metadata("t_none#0", {"a": 1}),
        KeyError,
        "t_none#0",
        id="metadata-unknown-instance",
    ),
    pytest.param(
        lambda m: m.replay_failed_instance(5),
        TypeError,
        "instance name",
        id="replay-int-name",
    ),
    pytest.param(
        lambda m: m.skip_failed_instance(None),
        TypeError,
        "instance name",
        id="skip-none-name",
    ),
    pytest.param(
        lambda m: m.update_instance_status(5, "finished"),
        TypeError,
        "instance name",
        id="status-int-name",
    ),
    pytest.param(
        lambda m: m.update_instance_metadata(None, {}),
        TypeError,
        "instance name",
        id="metadata-none-name",
    ),
    pytest.param(lambda m: m.storage[5], TypeError, "instance name", id="getitem-int"),
    pytest.param(lambda m: m.storage.clone_instance(5), TypeError, "instance name", id="clone-int"),
]


@pytest.mark.parametrize("operation, error, named", BAD_OPERATIONS)
def test_bad_manager_operations(
    populated: TriggerManager,
    operation: Callable[[TriggerManager], Any],
    error: type[BaseException],
    named: str,
) -> None:
    assert_rejected_without_change(populated, lambda: operation(populated), error, named)


@pytest.mark.parametrize(
    "uid, error",
    [
        pytest.param("", InvalidTriggerError, id="empty"),
        pytest.param(5, InvalidTriggerTypeError, id="int"),
        pytest.param("a\nb", InvalidTriggerError, id="newline"),
        pytest.param("u" * 251, InvalidTriggerError, id="too-long"),
    ],
)
def test_bad_session_uids(uid: Any, error: type[BaseException]) -> None:
    with pytest.raises(error, match="session uid"):
        CacheStorageBackend(uid)


def test_unknown_cache_alias_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no-such-cache"):
        CacheStorageBackend(new_uid(), cache="no-such-cache")


@pytest.mark.parametrize("timeout", [0, -5])
def test_non_positive_timeout_is_a_configuration_error(timeout: int) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        CacheStorageBackend(new_uid(), timeout=timeout)


@pytest.mark.parametrize(
    "run, fragment",
    [
        ("no.such.Task", "no Celery task named 'no.such.Task'"),
        ("tests.celery_app.ping_task", "not a TriggerTask"),
        ("tests.tasks.Pass\x07Thru", "control characters"),
        ("t" * 201, "the limit is 200"),
    ],
    ids=["unregistered", "plain-celery-task", "control-character", "too-long"],
)
def test_a_run_naming_no_registered_trigger_task_is_refused_when_configured(
    populated: TriggerManager, run: str, fragment: str
) -> None:
    # Issue 9 item 4: found by update_configuration, not at fire time, with
    # the message manage.py check gives; nothing stored
    error = assert_rejected_without_change(
        populated,
        lambda: populated.update_configuration({"t_x": {"after": ["a"], "run": run}}),
        ConfigurationError,
        fragment,
    )
    assert (error.task, error.directive) == ("t_x", "run")
    if run == "no.such.Task":
        from triggers.workflows import find_problems

        (problem,) = find_problems({"t_x": {"after": ["a"], "run": run}})
        assert problem.kind == "run" and error.message in problem.message


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("depth", [65, 300, 495, 5000])
def test_kwargs_nested_past_the_limit_are_refused_before_the_lock(
    populated: TriggerManager, depth: int
) -> None:
    # Issue 9 item 7: a typed error, not RecursionError from inside the fire
    error = assert_rejected_without_change(
        populated,
        lambda: populated.fire("a", nested(depth)),
        InvalidTriggerError,
        "nests deeper than 64 levels",
    )
    assert "MAX_KWARGS_DEPTH" in str(error)


def test_the_nesting_limit_comes_from_settings(populated: TriggerManager) -> None:
    with override_triggers(MAX_KWARGS_DEPTH=3):
        with pytest.raises(InvalidTriggerError, match="deeper than 3"):
            populated.fire("a", nested(4))
        populated.fire("a", nested(3))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.fire("a\ud800"),
        lambda m: m.fire("a", {"text": "x\udfff"}),
        lambda m: m.fire("a", {"k\ud800": 1}),
        lambda m: m.update_configuration({"t_\ud800": {"after": ["a"], "run": FailingTask.name}}),
    ],
    ids=["trigger-name", "kwargs-value", "kwargs-key", "task-name"],
)
def test_lone_surrogates_are_refused_with_a_library_error(
    populated: TriggerManager, make: Callable[[TriggerManager], Any]
) -> None:
    error = assert_rejected_without_change(
        populated, lambda: make(populated), TriggersError, "lone surrogate"
    )
    assert isinstance(error, ValueError)


def test_a_session_uid_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidTriggerError, match="lone surrogate"):
        CacheStorageBackend("uid-\ud800")


def test_a_non_json_kwarg_error_names_its_path(populated: TriggerManager) -> None:
    # Issue 14 item 5: where in the kwargs the bad value is
    error = assert_rejected_without_change(
        populated,
        lambda: populated.fire("a", {"a": [1, 2, {"b": object()}]}),
        InvalidTriggerTypeError,
        "kwargs['a'][2]['b'] is a object",
    )
    assert "JSON cannot represent" in str(error)
    with pytest.raises(InvalidTriggerTypeError, match=r"kwargs\['x'\] is nan"):
        populated.fire("a", {"x": float("nan")})


def test_a_fire_into_an_unconfigured_session_warns_by_default(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 9 item 3: recorded as the original did, with a WARNING naming
    # the session and trigger
    manager = TriggerManager(make_storage(kind, new_uid("typo")))
    with caplog.at_level("WARNING", logger="triggers"):
        assert manager.fire("submitted", {"n": 1}) == []
    assert manager.storage.latest_kwargs == {"submitted": {"n": 1}}
    (record,) = [r for r in caplog.records if "no configuration" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert manager.storage.uid in record.getMessage() and "'submitted'" in record.getMessage()


def test_on_unconfigured_raise_refuses_and_stores_nothing(kind: str) -> None:
    from triggers.exceptions import SessionNotConfiguredError

    manager = TriggerManager(make_storage(kind, new_uid("typo")))
    with override_triggers(ON_UNCONFIGURED="raise"):
        with pytest.raises(SessionNotConfiguredError) as info:
            manager.fire("submitted", {"n": 1})
        assert info.value.uid == manager.storage.uid and info.value.trigger == "submitted"
        assert manager.storage.debug_repr()["latest_kwargs"] == {}
        assert raw_state(manager.storage) == raw_state(make_storage(kind, new_uid("empty")))
        # A configured session is not affected
        manager.update_configuration({"t_x": {"after": ["a", "b"], "run": FailingTask.name}})
        assert manager.fire("a") == []


def test_on_unconfigured_record_is_silent(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = TriggerManager(make_storage(kind, new_uid("typo")))
    with override_triggers(ON_UNCONFIGURED="record"), caplog.at_level("WARNING"):
        manager.fire("submitted")
    assert manager.storage.latest_kwargs == {"submitted": {}}
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_the_longest_task_name_still_has_addressable_instances() -> None:
    # A 200-character task name is valid, so its instance names (longer) must work
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    task = "t" * 200
    manager.update_configuration({task: {"after": ["a"], "run": FailingTask.name}})
    manager.fire("a")
    settle()
    name = f"{task}#0"
    assert manager.storage[name].status == "failed"
    clone = manager.replay_failed_instance(name)
    settle()
    assert manager.storage.clone_instance(clone).name == f"{task}#2"
