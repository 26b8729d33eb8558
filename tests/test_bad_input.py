"""Bad input (SPEC §2, §3, §6) raises the library's typed errors, naming what
was wrong, and leaves the stored session exactly as it was, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.contract_backends import (  # noqa: F401 - fixtures
    BAD_CONFIGS,
    make_storage,
    new_uid,
    populate,
    raw_state,
    settle,
    threaded_fixture,
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


def test_fire_of_a_task_configured_to_run_an_unknown_celery_task() -> None:
    # A `run` naming no registered TriggerTask is reported when the task is due,
    # naming the task; the trigger itself is recorded.
    manager = TriggerManager(CacheStorageBackend(new_uid()))
    manager.update_configuration({"t_x": {"after": ["a"], "run": "no.such.Task"}})
    with pytest.raises(TriggersError) as info:
        manager.fire("a")
    assert "no.such.Task" in str(info.value)
    assert manager.storage.latest_kwargs == {"a": {}}
    assert manager.storage["t_x#0"].can_run


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
