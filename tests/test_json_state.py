"""Session state is JSON from end to end: every Redis key a session owns
after a real workflow, results a task returns, and ``debug_repr()``."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.managers import read_events, runs_key
from tests.tasks import NonJsonResultTask, RecordingTask
from tests.utils import wait_for
from triggers.manager import TriggerManager
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.redis import SEP
from triggers.types import TaskInstance

FINISHED = TaskInstance.STATUS_FINISHED
FAILED = TaskInstance.STATUS_FAILED
REPLAYED = TaskInstance.STATUS_REPLAYED
SKIPPED = TaskInstance.STATUS_SKIPPED
ABANDONED = TaskInstance.STATUS_ABANDONED

WORKFLOW = {
    "t_import": {
        "after": ["firstPageReceived", "questionnaireComplete"],
        "run": "triggers.testing.PassThruTask",
        "withParams": {"firstPageReceived": {"lang": "en", "responses": {"q0": None}}},
        "priority": 3,  # a custom directive, kept in TaskConfig.extras
    },
    "t_score": {"after": ["t_import"], "run": RecordingTask.name},
    "t_skip": {"after": ["t_import"], "run": "triggers.testing.SelfSkippingTask"},
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "triggers.testing.DevNullTask"},
    "t_fail": {"after": ["firstPageReceived"], "run": "triggers.testing.FailingTask"},
    "t_retry": {"after": ["firstPageReceived"], "run": "triggers.testing.SelfRetryingTask"},
    "t_abandon": {
        "after": ["never"],
        "unless": ["questionnaireComplete"],
        "run": "triggers.testing.DevNullTask",
    },
    "t_nonjson": {"after": ["questionnaireComplete"], "run": NonJsonResultTask.name},
    "t_after_skip": {"after": ["t_nonjson"], "run": "triggers.testing.DevNullTask"},
}


def statuses(storage: BaseTriggerStorage) -> dict[str, str]:
    return {name: inst.status for name, inst in storage.instances.items()}


def wait_for_statuses(storage: BaseTriggerStorage, expected: dict[str, str]) -> None:
    try:
        wait_for(lambda: statuses(storage) == expected, timeout=30)
    except AssertionError:
        raise AssertionError(f"expected {expected}, got {statuses(storage)}") from None


def run_full_workflow(manager: TriggerManager) -> None:
    """Every status and kind of metadata the library stores, on the worker."""
    manager.update_configuration(WORKFLOW)
    manager.fire("firstPageReceived", {"responses": {"q1": "ünïcødé ✓", "n": [1, 2.5, None]}})
    manager.fire("questionnaireComplete")
    manager.fire("tick", {"i": 0})
    manager.fire("tick", {"i": 1})
    settled = {
        "t_abandon#0": ABANDONED,
        "t_every#0": FINISHED,
        "t_every#1": FINISHED,
        "t_fail#0": FAILED,
        "t_import#0": FINISHED,
        "t_nonjson#0": FAILED,
        "t_retry#0": REPLAYED,
        "t_retry#1": REPLAYED,
        "t_retry#2": REPLAYED,
        "t_retry#3": FAILED,
        "t_score#0": FINISHED,
        "t_skip#0": SKIPPED,
    }
    wait_for_statuses(manager.storage, settled)
    manager.replay_failed_instance("t_fail#0", replacement_kwargs={"firstPageReceived": {}})
    manager.skip_failed_instance("t_nonjson#0", cascade=True, result={"skipped": True})
    settled.update(
        {
            "t_after_skip#0": FINISHED,
            "t_fail#0": REPLAYED,
            "t_fail#1": FAILED,
            "t_nonjson#0": SKIPPED,
        }
    )
    wait_for_statuses(manager.storage, settled)
    manager.mark_instance_logs_resolved("t_fail#1")


#: Keys that hold lock/lease tokens rather than session data: the lock and
#: its release signal (python-redis-lock), a running instance's lease, and the
#: tokens of recent commits (" tok1 tok2 ... ").
TOKEN_KEY = re.compile(r"^lock(-signal)?:.*:lock$|:lease:[^:]+$|:commits$")
TOKEN_TEXT = re.compile(rb"^[A-Za-z0-9+/=_ -]*$")
STATE_SUFFIXES = {"config", "index", "instances", "waiting", "counters", "kwargs", "meta"}
#: Written only when something uses them (an instance received kwargs, a
#: delayed fire, an idempotency key).
OPTIONAL_SUFFIXES = {"received", "values", "timers", "idem"}


def decoded_session_keys(redis_client, uid: str) -> dict[str, tuple[str, Any]]:
    """Every Redis key of session ``uid``: name -> (type, decoded contents).

    State keys must hold JSON (the waiting index: UTF-8 names); token keys
    plain ASCII tokens. Fails on anything else, pickle data in particular,
    and on keys of a kind this test does not know.
    """

    def load(raw: bytes, where: str) -> Any:
        assert not raw.startswith(b"\x80"), f"pickle data in {where}: {raw[:40]!r}"
        return json.loads(raw)

    found: dict[str, tuple[str, Any]] = {}
    for raw_key in redis_client.scan_iter(match=f"*triggers:{{{len(uid)}:{uid}}}*", count=1000):
        key = raw_key.decode()
        kind = redis_client.type(raw_key).decode()
        if TOKEN_KEY.search(key):
            raw_values = (
                redis_client.lrange(raw_key, 0, -1)
                if kind == "list"
                else [redis_client.get(raw_key)]
            )
            assert all(TOKEN_TEXT.match(v) for v in raw_values), (key, raw_values)
            found[key] = (kind, [v.decode() for v in raw_values])
            continue
        suffix = key.rsplit(":", 1)[1]
        assert suffix in STATE_SUFFIXES | OPTIONAL_SUFFIXES, f"unknown session key {key}"
        if kind == "hash":
            fields = redis_client.hgetall(raw_key)
            # A received value may be "@<digest>" of one kept in :values.
            value: Any = {
                f.decode(): v.decode()
                if suffix == "received" and v.startswith(b"@")
                else load(v, f"{key}[{f.decode()}]")
                for f, v in fields.items()
            }
        elif kind == "string":
            value = load(redis_client.get(raw_key), key)
        elif kind == "zset":
            members = redis_client.zrange(raw_key, 0, -1)
            for member in members:
                assert not member.startswith(b"\x80"), f"pickle data in {key}"
            value = [tuple(m.decode().split(SEP)) for m in members]
            assert suffix == "idem" or all(len(parts) == 3 for parts in value), value
        else:
            raise AssertionError(f"unexpected {kind} key {key}")
        found[key] = (kind, value)
    return found


def test_every_redis_key_of_a_session_holds_json_after_a_full_workflow(
    celery_worker, redis_client, unique_uid
):
    # Given a session that went through every status on the real worker
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    run_full_workflow(manager)

    # When every Redis key the session owns is read back
    keys = decoded_session_keys(redis_client, unique_uid)

    # Then each holds JSON (no pickle anywhere) in the documented layout
    by_suffix = {key.rsplit(":", 1)[1]: value for key, value in keys.items()}
    assert {"config", "index", "instances", "counters", "kwargs", "meta"} <= set(by_suffix)
    assert by_suffix["config"][0] == "hash"
    assert set(by_suffix["config"][1]) == set(WORKFLOW)
    assert by_suffix["config"][1]["t_import"]["priority"] == 3
    kind, instances = by_suffix["instances"]
    assert kind == "hash" and len(instances) == 14
    assert instances["t_import#0"]["metadata"]["result"] == {
        "kwargs": {
            "firstPageReceived": {
                "lang": "en",
                # withParams merged recursively under the fired kwargs
                "responses": {"q0": None, "q1": "ünïcødé ✓", "n": [1, 2.5, None]},
            },
            "questionnaireComplete": {},
        }
    }
    assert instances["t_fail#1"]["metadata"]["parent"] == "t_fail#0"
    assert "RuntimeError" in instances["t_fail#0"]["metadata"]["exc_traceback"]
    counters = by_suffix["counters"][1]
    assert (counters["t_retry"], counters["t_fail"], counters["t_every"]) == (4, 2, 2)
    assert by_suffix["kwargs"][1]["tick"] == {"i": 1}
    # ... and no worker lease or lock outlived the workflow
    assert not [k for k in keys if ":lease:" in k or k.startswith("lock:")]
    assert STATE_SUFFIXES - {"waiting"} <= {k.rsplit(":", 1)[1] for k in keys}


def test_a_task_returning_non_json_fails_clearly_and_stores_nothing_unserialisable(
    celery_worker, redis_client, unique_uid
):
    # Given a task whose result holds a datetime
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration(
        {
            "t_nonjson": {"after": ["start"], "run": NonJsonResultTask.name},
            "t_next": {"after": ["t_nonjson"], "run": RecordingTask.name},
        }
    )

    # When the worker runs it
    manager.fire("start")

    # Then the instance fails with a message about JSON, ran once, and
    # nothing cascaded
    wait_for(lambda: manager.storage["t_nonjson#0"].status == FAILED, message="t_nonjson failed")
    inst = manager.storage["t_nonjson#0"]
    assert inst.metadata["exc_type"].endswith("InvalidTriggerTypeError")
    assert "JSON" in inst.metadata["exc_message"]
    assert "result" not in inst.metadata
    assert [r["instance"] for r in read_events(runs_key(unique_uid))] == ["t_nonjson#0"]
    assert [i.name for i in manager.storage] == ["t_nonjson#0"]
    # ... and the session still holds only JSON
    decoded_session_keys(redis_client, unique_uid)


def test_debug_repr_is_plain_json_data(celery_worker, unique_uid):
    # Given a session after a full workflow
    manager = TriggerManager(CacheStorageBackend(unique_uid))
    run_full_workflow(manager)

    # When its debug representation is taken
    snapshot = manager.storage.debug_repr()

    # Then it survives a JSON round trip unchanged and shows the session
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["uid"] == unique_uid
    assert set(snapshot["tasks"]) == set(WORKFLOW)
    assert snapshot["instances"]["t_nonjson#0"]["status"] == SKIPPED
    assert snapshot["instances"]["t_fail#1"]["metadata"]["logs_resolved"] is True
    assert snapshot["latest_kwargs"]["t_nonjson"] == {"skipped": True}
