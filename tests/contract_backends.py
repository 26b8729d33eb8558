"""Shared helpers for the in-process behaviour suite: storage backends of every
kind (for the contract tests), a fixture that runs tasks on the threading
runner, raw-state snapshots and small task classes several test modules use.

Tasks here run in threads of the test process, so their classes only need to
be importable: their names are their dotted paths (``tests.contract_backends.X``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.database import DatabaseStorageBackend
from triggers.task import TaskContext, TriggerTask
from triggers.testing import DevNullTask, PassThruTask
from triggers.types import TaskConfig, TaskInstance

DEV = DevNullTask.name
PASS = PassThruTask.name

# --- storage backends ---------------------------------------------------------

#: The custom backend's "database": uid -> the session as a JSON document.
DICT_DATABASE: dict[str, str] = {}


class DictStorage(BaseTriggerStorage):
    """A custom backend written the documented way: a name and two primitives."""

    name = "tests-dict"

    def _load_from_backend(
        self,
    ) -> tuple[dict[str, TaskConfig], dict[str, TaskInstance], dict[str, Any]]:
        raw = DICT_DATABASE.get(self.uid)
        return self._deserialize(json.loads(raw) if raw else None)

    def _save(self) -> None:
        DICT_DATABASE[self.uid] = json.dumps(self._serialize())


#: Every storage the contract suite runs against ("database": the database
#: backend on the run's PostgreSQL database, see tests.conftest).
STORAGE_KINDS = ["builtin-redis", "django-redis", "locmem", "custom", "database"]
REDIS_KINDS = ["builtin-redis", "django-redis"]
_CACHE_ALIAS = {"builtin-redis": "builtin-redis", "django-redis": "djredis", "locmem": "locmem"}


def make_storage(kind: str, uid: str, **kwargs: Any) -> BaseTriggerStorage:
    if kind == "custom":
        return DictStorage(uid)
    if kind == "database":
        return DatabaseStorageBackend(uid, database=POSTGRES_ALIAS, **kwargs)
    return CacheStorageBackend(uid, cache=_CACHE_ALIAS[kind], **kwargs)


def new_uid(label: str = "s") -> str:
    return f"{label}-{uuid.uuid4().hex}"


def redis_cache_client() -> redis.Redis:
    return redis.Redis.from_url(f"{settings.TRIGGERS_TEST_REDIS_URL}/{settings.REDIS_CACHE_DB}")


def raw_redis_state(client: redis.Redis, uid: str) -> dict[bytes, Any]:
    """Every Redis key of a session with its exact stored bytes (lock keys
    excluded: they exist only while someone holds the lock)."""
    state: dict[bytes, Any] = {}
    for key in sorted(client.scan_iter(match=f"*triggers:{{{len(uid)}:{uid}}}:*")):
        if b":lock" in key:
            continue
        kind = client.type(key)
        if kind == b"hash":
            state[key] = sorted(client.hgetall(key).items())
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"string":
            state[key] = client.get(key)
        elif kind == b"list":
            state[key] = client.lrange(key, 0, -1)
        else:  # lists, sets, streams: their exact serialised form
            state[key] = client.dump(key)
    return state


#: DATABASES alias of the run's PostgreSQL database.
POSTGRES_ALIAS = "postgres"

_RAW_DATABASE_STATE = """
SELECT json_build_object(
  'session', (SELECT row_to_json(s) FROM triggers_session s WHERE s.id = %(id)s),
  'tasks', (SELECT json_agg(r ORDER BY r.name) FROM triggers_task r WHERE r.session_id = %(id)s),
  'index', (SELECT json_agg(r ORDER BY r.trigger)
            FROM triggers_trigger_index r WHERE r.session_id = %(id)s),
  'instances', (SELECT json_agg(r ORDER BY r.name)
                FROM triggers_instance r WHERE r.session_id = %(id)s),
  'waiting', (SELECT json_agg(r ORDER BY r.trigger, r.task, r.instance)
              FROM triggers_waiting r WHERE r.session_id = %(id)s),
  'kwargs', (SELECT json_agg(r ORDER BY r.trigger)
             FROM triggers_latest_kwargs r WHERE r.session_id = %(id)s)
)::text
"""


def raw_database_state(storage: DatabaseStorageBackend) -> str | None:
    """Every row of a session, as PostgreSQL holds it, as one JSON text."""
    from django.db import connections

    with connections[storage.database].cursor() as cursor:
        cursor.execute("SELECT id FROM triggers_session WHERE uid = %s", [storage.uid])
        found = cursor.fetchone()
        if found is None:
            return None
        cursor.execute(_RAW_DATABASE_STATE, {"id": found[0]})
        return str(cursor.fetchone()[0])


def raw_state(storage: BaseTriggerStorage) -> Any:
    """What the backend holds for a session, byte for byte where possible."""
    if isinstance(storage, DictStorage):
        return DICT_DATABASE.get(storage.uid)
    if isinstance(storage, DatabaseStorageBackend):
        return raw_database_state(storage)
    assert isinstance(storage, CacheStorageBackend)
    if storage.uses_redis:
        client = redis_cache_client()
        try:
            return raw_redis_state(client, storage.uid)
        finally:
            client.close()
    return storage.cache.get(storage._base)


# --- running tasks in threads ------------------------------------------------


def settle() -> None:
    """Wait for every task thread (and the cascades they fire)."""
    ThreadingTaskRunner.join_all(30)


def statuses(storage: BaseTriggerStorage) -> dict[str, str]:
    return {name: inst.status for name, inst in storage.instances.items()}


# --- bad configurations (SPEC §2) -------------------------------------------

#: (id, configuration, task named in the error, directive named, suggestion)
BAD_CONFIGS: list[tuple[str, dict[Any, Any], str, str | None, str | None]] = [
    ("missing-after", {"t_bad": {"run": DEV}}, "t_bad", "after", None),
    ("missing-run", {"t_bad": {"after": ["a"]}}, "t_bad", "run", None),
    ("after-string", {"t_bad": {"after": "a", "run": DEV}}, "t_bad", "after", None),
    ("after-number", {"t_bad": {"after": 5, "run": DEV}}, "t_bad", "after", None),
    ("after-empty", {"t_bad": {"after": [], "run": DEV}}, "t_bad", "after", None),
    ("after-non-string-name", {"t_bad": {"after": [1], "run": DEV}}, "t_bad", "after", None),
    (
        "unless-string",
        {"t_bad": {"after": ["a"], "run": DEV, "unless": "x"}},
        "t_bad",
        "unless",
        None,
    ),
    ("run-number", {"t_bad": {"after": ["a"], "run": 5}}, "t_bad", "run", None),
    ("run-empty", {"t_bad": {"after": ["a"], "run": " "}}, "t_bad", "run", None),
    (
        "andEvery-list",
        {"t_bad": {"after": ["a"], "run": DEV, "andEvery": ["b"]}},
        "t_bad",
        "andEvery",
        None,
    ),
    (
        "withParams-list",
        {"t_bad": {"after": ["a"], "run": DEV, "withParams": ["a"]}},
        "t_bad",
        "withParams",
        None,
    ),
    (
        "withParams-not-dict-of-dicts",
        {"t_bad": {"after": ["a"], "run": DEV, "withParams": {"a": 1}}},
        "t_bad",
        "withParams",
        None,
    ),
    (
        "withParams-not-json",
        {"t_bad": {"after": ["a"], "run": DEV, "withParams": {"a": {"k": {1, 2}}}}},
        "t_bad",
        "withParams",
        None,
    ),
    (
        "typo-andevery",
        {"t_bad": {"after": ["a"], "run": DEV, "andevery": "b"}},
        "t_bad",
        "andevery",
        "andEvery",
    ),
    (
        "typo-with_params",
        {"t_bad": {"after": ["a"], "run": DEV, "with_params": {}}},
        "t_bad",
        "with_params",
        "withParams",
    ),
    ("typo-After", {"t_bad": {"After": ["a"], "run": DEV}}, "t_bad", "After", "after"),
    (
        "using-unknown-runner",
        {"t_bad": {"after": ["a"], "run": DEV, "using": "threadin"}},
        "t_bad",
        "using",
        "threading",
    ),
    (
        "extra-not-json",
        {"t_bad": {"after": ["a"], "run": DEV, "priority": object()}},
        "t_bad",
        "priority",
        None,
    ),
    ("self-cycle", {"t_bad": {"after": ["t_bad"], "run": DEV}}, "t_bad", "after", None),
    (
        "two-task-cycle",
        {"t_bad": {"after": ["t_other"], "run": DEV}, "t_other": {"after": ["t_bad"], "run": DEV}},
        "t_bad",
        "after",
        None,
    ),
    (
        # The cycle closes through t_downstream, a task already in the session.
        "cycle-through-stored-task",
        {"t_upstream": {"after": ["t_downstream"], "run": DEV}},
        "t_downstream",
        "after",
        None,
    ),
    (
        # A valid task next to a bad one is not stored either.
        "valid-and-invalid-together",
        {"t_fine": {"after": ["a"], "run": DEV}, "t_bad": {"after": "a", "run": DEV}},
        "t_bad",
        "after",
        None,
    ),
]


def populate(manager: TriggerManager) -> None:
    """Give a session configuration, fired triggers and instances in several
    statuses, so 'unchanged' comparisons compare something."""
    manager.update_configuration(
        {
            "t_base": {"after": ["a"], "run": DEV},
            "t_waiting": {"after": ["a", "b"], "run": DEV, "unless": ["x", "y"]},
            "t_downstream": {"after": ["t_upstream"], "run": DEV},
        }
    )
    manager.fire("a", {"n": 1})
    settle()


# --- small tasks shared by several modules ------------------------------------

#: Events a BlockingTask waits on, keyed by instance name + session uid.
GATES: dict[str, threading.Event] = {}


def gate(uid: str, instance_name: str) -> threading.Event:
    return GATES.setdefault(f"{uid}/{instance_name}", threading.Event())


class BlockingTask(TriggerTask):
    """Stays ``running`` until the test opens its gate; returns its kwargs."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        opened = gate(context.manager.storage.uid, context.instance_name).wait(20)
        return {"opened": opened}


# --- the document-tier example of docs/storages.rst -----------------------------
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def sqlite_example() -> Any:
    """docs/examples/sqlite_storage.py, imported as the docs show it."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import sqlite_storage

    return sqlite_storage


def sqlite_indexed_example() -> Any:
    """docs/examples/sqlite_indexed_storage.py, imported as the docs show it."""
    sqlite_example()  # puts the examples on the path
    import sqlite_indexed_storage

    return sqlite_indexed_storage


class RecordingTask(TriggerTask):
    """Appends its instance name to the file ``$TRIGGERS_TEST_RUN_LOG``
    names, so a test can count how often each instance ran, across
    processes (one short ``O_APPEND`` write per line: lines never mix)."""

    def _run(self, context: TaskContext) -> None:
        with open(os.environ["TRIGGERS_TEST_RUN_LOG"], "a") as log:
            log.write(f"{context.instance_name}\n")
