"""The storage contract suite: the tests every storage backend must pass,
for a third-party backend to run as they run on the built-in ones.

Subclass :class:`StorageContractTests` (either tier) or
:class:`DocumentStorageContractTests` (a document-tier backend: adds the
version checks) in a pytest module, and say how to build a storage::

    from triggers.testing.contract import DocumentStorageContractTests

    class TestMyBackend(DocumentStorageContractTests):
        def make_storage(self, uid):
            return MyBackend(uid)

Tasks run in threads of the test process (the threading runner), so the
suite needs only the backend's own service and configured Django settings.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from ..exceptions import LockHeldError
from ..manager import TriggerManager
from ..runners.threading import ThreadingTaskRunner
from ..storages.base import BaseTriggerStorage
from ..storages.data import FetchRequest
from ..storages.document import DocumentStorage
from . import DevNullTask, PassThruTask, TriggerManagerTestCaseMixin

__all__ = ["DocumentStorageContractTests", "StorageContractTests"]

DEV = DevNullTask.name
PASS = PassThruTask.name


class StorageContractTests(TriggerManagerTestCaseMixin):
    """What every backend does, through the public session API and the
    indexed tier's methods (a document-tier backend offers them too)."""

    #: How many storage objects race in the concurrency test, each in a thread.
    racers = 4
    #: How many triggers each of them fires.
    fires_per_racer = 5

    def make_storage(self, uid: str) -> BaseTriggerStorage:
        """A storage for session ``uid`` on the backend under test."""
        raise NotImplementedError

    def new_uid(self) -> str:
        return f"contract-{uuid.uuid4().hex}"

    def settle(self) -> None:
        ThreadingTaskRunner.join_all(self.join_timeout)

    def configured(self, workflow: dict[str, Any]) -> TriggerManager:
        manager = TriggerManager(self.make_storage(self.new_uid()))
        manager.update_configuration(workflow)
        return manager

    # -- the tests -------------------------------------------------------------
    def test_a_new_session_is_empty(self) -> None:
        storage = self.make_storage(self.new_uid())
        assert storage.tasks == {}
        assert storage.instances == {}
        assert storage.fetch(FetchRequest(everything=True)).meta is None

    def test_a_workflow_runs_and_a_fresh_object_sees_its_end(self) -> None:
        # Given a two-step workflow
        manager = self.configured(
            {"t_a": {"after": ["start"], "run": PASS}, "t_b": {"after": ["t_a"], "run": DEV}}
        )
        # When it starts and its tasks have run
        manager.fire("start", {"n": 1})
        self.settle()
        # Then another storage object of the session sees both finished
        fresh = self.make_storage(manager.storage.uid)
        assert {n: i.status for n, i in fresh.instances.items()} == {
            "t_a#0": "finished",
            "t_b#0": "finished",
        }
        assert fresh.latest_kwargs["start"] == {"n": 1}

    def test_a_fetch_for_a_trigger_loads_the_tasks_that_wait_on_it(self) -> None:
        manager = self.configured(
            {"t_a": {"after": ["start"], "run": DEV}, "t_b": {"after": ["other"], "run": DEV}}
        )
        with manager.storage.transaction():
            snap = manager.storage.fetch(FetchRequest(triggers=("start",)))
        assert snap.index["start"] == ["t_a"]
        assert "t_a" in snap.configs
        assert snap.meta is not None

    def test_nothing_is_written_when_a_locked_block_raises(self) -> None:
        manager = self.configured({"t_a": {"after": ["never"], "run": DEV}})
        storage = manager.storage
        try:
            with storage.acquire_lock() as session:
                session.create_instance("t_a")
                raise KeyError("stop")
        except KeyError:
            pass  # the block's own error: what matters is that nothing was written
        assert self.make_storage(storage.uid).instances == {}

    def test_racing_storage_objects_schedule_every_instance_once(self) -> None:
        # Given a task per trigger and one after all of them
        names = [f"p{r}_{i}" for r in range(self.racers) for i in range(self.fires_per_racer)]
        workflow = {f"t_{n}": {"after": [n], "run": DEV} for n in names}
        workflow["t_all"] = {"after": names, "run": DEV}
        uid = self.configured(workflow).storage.uid
        errors: list[BaseException] = []

        def racer(r: int) -> None:
            manager = TriggerManager(self.make_storage(uid))
            try:
                for i in range(self.fires_per_racer):
                    manager.fire(f"p{r}_{i}")
            except BaseException as exc:
                errors.append(exc)

        # When every storage object fires its own triggers at the same time
        threads = [threading.Thread(target=racer, args=(r,)) for r in range(self.racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.join_timeout)
        self.settle()
        assert not errors, errors
        # Then no fire was lost and every instance was created and run once
        instances = self.make_storage(uid).instances
        assert sorted(instances) == sorted([f"t_{n}#0" for n in names] + ["t_all#0"])
        assert {i.status for i in instances.values()} == {"finished"}

    def test_renew_lease_refuses_a_token_that_is_not_the_holders(self) -> None:
        manager = self.configured({"t_a": {"after": ["never"], "run": DEV}})
        assert manager.storage.renew_lease("t_a#0", "not-a-worker", 1000) is False

    def test_delete_removes_the_whole_session(self) -> None:
        manager = self.configured({"t_a": {"after": ["start"], "run": DEV}})
        manager.fire("start")
        self.settle()
        storage = manager.storage
        with storage.acquire_lock():
            try:
                storage.delete()
            except LockHeldError:
                pass  # the refusal this test expects
            else:
                raise AssertionError("delete() inside the session's own block must refuse")
        assert storage.delete() is True
        fresh = self.make_storage(storage.uid)
        assert (fresh.tasks, fresh.instances, fresh.latest_kwargs) == ({}, {}, {})
        assert storage.delete() is False

    def test_a_worker_rebuilds_the_storage_from_its_init_kwargs(self) -> None:
        manager = self.configured({"t_a": {"after": ["never"], "run": DEV}})
        storage = manager.storage
        rebuilt = type(storage)(storage.uid, **storage.get_init_kwargs())
        assert list(rebuilt.tasks) == ["t_a"]
        json.dumps(rebuilt.debug_repr())  # plain JSON, nothing pickled

    # -- timers and idempotency keys (the session's part of SPEC §14) ---------
    def _timer(self, trigger: str, due: str) -> dict[str, Any]:
        return {"trigger": trigger, "due": due, "kwargs": {"n": 1}}

    def test_an_idempotency_key_is_seen_after_its_commit_until_it_expires(self) -> None:
        manager = self.configured({"t_a": {"after": ["a", "b"], "run": DEV}})
        storage = manager.storage
        ask = FetchRequest(idempotency_key="order-1")
        # Given a fire and its key recorded in one commit
        with storage.transaction() as txn:
            assert storage.fetch(ask).idempotency_seen is False
            manager.fire("a", {"n": 1})
            txn.changes.idempotency = ("order-1", time.time() + 60)
        # Then both are there, for any storage object of the session
        fresh = self.make_storage(storage.uid)
        assert fresh.fetch(ask).idempotency_seen is True
        everything = FetchRequest(everything=True, idempotency_key="order-1")
        assert fresh.fetch(everything).idempotency_seen is True
        assert fresh.fetch(FetchRequest(idempotency_key="order-2")).idempotency_seen is False
        assert [i.name for i in fresh.instances.values()] == ["t_a#0"]
        # And a key whose expiry passed counts as never seen (expired keys
        # are dropped as new ones are recorded)
        with storage.transaction() as txn:
            txn.fetch()
            txn.changes.idempotency = ("order-2", time.time() - 1)
        with storage.transaction() as txn:
            txn.fetch()
            txn.changes.idempotency = ("order-3", time.time() + 60)
        assert fresh.fetch(FetchRequest(idempotency_key="order-2")).idempotency_seen is False
        assert fresh.fetch(FetchRequest(idempotency_key="order-3")).idempotency_seen is True

    def test_a_session_keeps_at_most_idempotency_max_keys_keys(self) -> None:
        from django.conf import settings
        from django.test import override_settings

        manager = self.configured({"t_a": {"after": ["a", "b"], "run": DEV}})
        storage = manager.storage
        capped = {**getattr(settings, "TRIGGERS", {}), "IDEMPOTENCY_MAX_KEYS": 3}
        soon = time.time() + 60
        # Given five keys recorded one after another with a cap of three
        with override_settings(TRIGGERS=capped):
            for n in range(5):
                with storage.transaction() as txn:
                    txn.fetch()
                    txn.changes.idempotency = (f"evt-{n}", soon + n)
        # Then the newest three are kept and the two oldest were dropped
        fresh = self.make_storage(storage.uid)
        seen = [
            fresh.fetch(FetchRequest(idempotency_key=f"evt-{n}")).idempotency_seen for n in range(5)
        ]
        assert seen == [False, False, True, True, True]

    def test_an_idempotency_key_is_not_recorded_when_its_block_raises(self) -> None:
        manager = self.configured({"t_a": {"after": ["a", "b"], "run": DEV}})
        storage = manager.storage
        try:
            with storage.transaction() as txn:
                manager.fire("a")
                txn.changes.idempotency = ("order-1", time.time() + 60)
                raise _ChangedMyMind
        except _ChangedMyMind:
            pass  # the abort this test makes
        fresh = self.make_storage(storage.uid)
        assert fresh.fetch(FetchRequest(idempotency_key="order-1")).idempotency_seen is False
        assert fresh.instances == {}

    def test_timers_are_added_loaded_and_removed_with_the_session(self) -> None:
        manager = self.configured({"t_a": {"after": ["a"], "run": DEV}})
        storage = manager.storage
        due = "2030-01-01T00:00:00+00:00"
        first, second = self._timer("a", due), self._timer("b", due)
        with storage.transaction() as txn:
            txn.fetch()
            txn.changes.timers_add.update({"tm-1": first, "tm-2": second})
        fresh = self.make_storage(storage.uid)
        assert fresh.fetch(FetchRequest(timers=True)).timers == {"tm-1": first, "tm-2": second}
        assert fresh.fetch(FetchRequest(everything=True)).timers == {
            "tm-1": first,
            "tm-2": second,
        }
        with storage.transaction() as txn:
            txn.fetch()
            txn.changes.timers_remove.add("tm-1")
        assert fresh.fetch(FetchRequest(timers=True)).timers == {"tm-2": second}
        # Deleting the session deletes its timers
        assert storage.delete() is True
        assert fresh.fetch(FetchRequest(timers=True)).timers == {}

    def test_a_fire_into_a_wide_task_keeps_every_kwargs_it_received(self) -> None:
        # Given a task waiting on many triggers (stored one entry per trigger)
        names = [f"w{i:03}" for i in range(40)]
        manager = self.configured({"t_wide": {"after": names, "run": DEV}})
        # When all but one fire, from different storage objects
        for n, name in enumerate(names[:-1]):
            TriggerManager(self.make_storage(manager.storage.uid)).fire(name, {"n": n})
        waiting = self.make_storage(manager.storage.uid)["t_wide#0"]
        assert waiting.waiting_on() == {names[-1]}
        assert len(waiting.kwargs) == len(names) - 1
        # Then the last one makes it ready with all of them
        (ready,) = manager.fire(names[-1], {"n": len(names) - 1})
        assert ready.kwargs == {name: {"n": n} for n, name in enumerate(names)}
        self.settle()
        assert self.make_storage(manager.storage.uid)["t_wide#0"].kwargs == ready.kwargs


class _ChangedMyMind(Exception):
    """Raised to abort a block in a test."""


class DocumentStorageContractTests(StorageContractTests):
    """:class:`StorageContractTests` plus what a document-tier backend's
    ``read``/``write`` must guarantee."""

    def make_storage(self, uid: str) -> DocumentStorage:
        raise NotImplementedError

    def test_a_write_against_a_stale_version_writes_nothing(self) -> None:
        manager = self.configured({"t_a": {"after": ["never"], "run": DEV}})
        storage = self.make_storage(manager.storage.uid)
        document, version = storage.read()
        assert document is not None
        # When someone else writes first
        manager.update_configuration({"t_b": {"after": ["never"], "run": DEV}})
        # Then a write based on the older read is refused and changes nothing
        assert storage.write({**document, "metadata": {}}, version) is False
        assert sorted(self.make_storage(storage.uid).tasks) == ["t_a", "t_b"]

    def test_a_write_creates_only_a_session_that_is_still_absent(self) -> None:
        uid = self.new_uid()
        storage = self.make_storage(uid)
        document, version = storage.read()
        assert document is None
        # When another object creates the session first
        TriggerManager(self.make_storage(uid)).update_configuration(
            {"t_a": {"after": ["never"], "run": DEV}}
        )
        # Then creating it from the absent version is refused
        empty: dict[str, Any] = {"tasks": {}, "instances": {}, "metadata": {}}
        assert storage.write(empty, version) is False
        assert list(self.make_storage(uid).tasks) == ["t_a"]

    def test_write_none_deletes_only_the_version_read(self) -> None:
        manager = self.configured({"t_a": {"after": ["never"], "run": DEV}})
        storage = self.make_storage(manager.storage.uid)
        _, version = storage.read()
        manager.update_configuration({"t_b": {"after": ["never"], "run": DEV}})
        assert storage.write(None, version) is False
        _, current = storage.read()
        assert storage.write(None, current) is True
        assert storage.read()[0] is None
