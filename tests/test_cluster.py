"""Session state on a Redis Cluster (SPEC §15): ``TRIGGERS['REDIS_CLIENT']``
set to ``redis+cluster://`` of a private three-master cluster this run
starts (tests/redis_cluster.py). The storage contract suite, the property
tests and the multi-process exactly-once tests run on it, with a real Celery
worker whose state is on the cluster too; and each session's keys share one
hash slot while the sessions (and the session index) spread over every
master. (Timers on the cluster: tests/test_timers.py.)
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from tests import test_concurrency as concurrency
from tests import test_properties as properties
from tests.celery_app import app as celery_app
from tests.managers import init_spawned_process
from tests.worker import CeleryWorker
from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.sessions import count_sessions, delete_session, list_sessions
from triggers.storages.base import BaseTriggerStorage
from triggers.storages.cache import CacheStorageBackend
from triggers.storages.session_index import RedisSessionIndex, shard_of
from triggers.testing import DevNullTask
from triggers.testing.contract import StorageContractTests

DEV = DevNullTask.name
#: What tests/settings.py reads in child processes (workers, racers).
CLIENT_ENV = "TRIGGERS_TEST_REDIS_CLIENT"


@pytest.fixture(scope="module", autouse=True)
def on_cluster(redis_cluster_url: str) -> Iterator[str]:
    """Session state on the cluster for every test of this module, in this
    process (settings) and in the processes it starts (environment)."""
    triggers = {**django_settings.TRIGGERS, "REDIS_CLIENT": redis_cluster_url}
    previous = os.environ.get(CLIENT_ENV)
    os.environ[CLIENT_ENV] = redis_cluster_url
    try:
        with override_settings(TRIGGERS=triggers):
            yield redis_cluster_url
    finally:
        if previous is None:
            os.environ.pop(CLIENT_ENV, None)
        else:
            os.environ[CLIENT_ENV] = previous


def cluster_storage(uid: str, cache: str = "default") -> CacheStorageBackend:
    storage = CacheStorageBackend(uid, cache=cache)
    client_of(storage)
    return storage


def client_of(storage: CacheStorageBackend) -> RedisCluster:
    """The storage's client, which must be a cluster client."""
    client = storage.redis_client
    assert isinstance(client, RedisCluster), client
    return client


def keys_by_master(client: RedisCluster, pattern: str) -> dict[str, list[bytes]]:
    """The keys matching ``pattern`` on each master, by master name."""
    return {
        node.name: list(node.redis_connection.scan_iter(match=pattern, count=1000))
        for node in client.get_primaries()
    }


def slot(client: RedisCluster, key: bytes) -> int:
    return int(client.keyslot(key))


# -- the storage contract ---------------------------------------------------------


class TestClusterContract(StorageContractTests):
    """The contract suite every backend passes, on the cluster."""

    def make_storage(self, uid: str) -> BaseTriggerStorage:
        return cluster_storage(uid)


@pytest.mark.parametrize("alias", ["default", "builtin-redis", "djredis", "locmem"])
def test_state_and_locks_go_on_the_cluster_whatever_the_cache_alias(alias: str) -> None:
    # Given REDIS_CLIENT naming the cluster, and a cache alias of any kind
    storage = cluster_storage(f"alias-{uuid.uuid4().hex}", cache=alias)
    manager = TriggerManager(storage)
    with properties.using_runner("threading"):
        manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
        manager.fire("a")
    # Then the indexed tier holds the session, on the cluster
    assert storage.kind == "indexed"
    assert cluster_storage(storage.uid, cache=alias)["t_a#0"].status == "finished"
    found = keys_by_master(client_of(storage), f"*{storage.uid}*")
    assert sum(len(keys) for keys in found.values()) >= 3


def own_cluster_client() -> RedisCluster:
    """A project's own client factory (``REDIS_CLIENT`` as a dotted path)."""
    url = os.environ[CLIENT_ENV].replace("redis+cluster://", "redis://")
    return RedisCluster.from_url(url, socket_timeout=3)


def test_a_client_factory_of_the_project_is_used_as_built(settings: Any) -> None:
    settings.TRIGGERS = {**settings.TRIGGERS, "REDIS_CLIENT": f"{__name__}.own_cluster_client"}
    storage = cluster_storage(f"factory-{uuid.uuid4().hex}", cache="locmem")
    client = client_of(storage)
    assert client.get_connection_kwargs()["socket_timeout"] == 3
    assert client_of(cluster_storage(storage.uid)) is client
    TriggerManager(storage).update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    assert list(cluster_storage(storage.uid).tasks) == ["t_a"]


def test_deploy_checks_inspect_every_master(settings: Any) -> None:
    from triggers.checks_storage import check_deployment

    settings.TRIGGERS = {**settings.TRIGGERS, "TIMEOUT": None, "ON_UNCONFIGURED": "raise"}
    client = client_of(cluster_storage("checks"))
    # The test cluster persists nothing: each master says so, by name
    found = [m for m in check_deployment() if m.id == "triggers.W111"]
    masters = {node.name for node in client.get_primaries()}
    assert len(found) == 3
    assert {m.msg.split("master ")[1].split(")")[0] for m in found} == masters


# -- keys and slots ---------------------------------------------------------------


def test_every_key_of_a_session_shares_one_hash_slot() -> None:
    # Given a session with instances, leases, kwargs and a held lock
    storage = cluster_storage(f"slots-{uuid.uuid4().hex}")
    manager = TriggerManager(storage)
    with properties.using_runner("threading"):
        manager.update_configuration(
            {
                "t_a": {"after": ["a"], "run": DEV},
                "t_b": {"after": ["t_a", "b"], "run": DEV},
                "t_c": {"after": ["a"], "andEvery": "a", "run": DEV},
            }
        )
        manager.fire("a", {"n": 1})
        manager.fire("a", {"n": 2})
    with storage.acquire_lock():
        found = keys_by_master(client_of(storage), f"*{storage.uid}*")
    keys = [key for part in found.values() for key in part]
    # Then they all live in one slot (so on one master)
    assert len(keys) >= 5, keys
    assert len({slot(client_of(storage), k) for k in keys}) == 1, keys
    assert len([name for name, part in found.items() if part]) == 1


def test_sessions_spread_over_every_master() -> None:
    # Given 60 sessions, each written once
    label = f"spread-{uuid.uuid4().hex[:8]}"
    client: Any = None
    with properties.using_runner("threading"):
        for n in range(60):
            storage = cluster_storage(f"{label}-{n}")
            client = client_of(storage)
            TriggerManager(storage).update_configuration({"t_a": {"after": ["a"], "run": DEV}})
    # Then every master holds some of them
    found = keys_by_master(client, f"*{label}-*")
    assert len(found) == 3
    assert all(found.values()), {name: len(keys) for name, keys in found.items()}
    # ... and the session index's shards are spread too
    index = RedisSessionIndex(CacheStorageBackend("probe").cache, client)
    masters = {client.get_node_from_key(shard[0]).name for shard in index.shards}
    assert len(masters) == 3


# -- the session index ------------------------------------------------------------


def test_sessions_are_listed_counted_and_deleted_on_the_cluster() -> None:
    # Given sessions in several shards of the index
    label = f"listed-{uuid.uuid4().hex[:8]}:"
    uids = [f"{label}{n}" for n in range(12)]
    assert len({shard_of(uid) for uid in uids}) > 3
    with properties.using_runner("threading"):
        for uid in uids:
            manager = TriggerManager(cluster_storage(uid))
            manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
            manager.fire("a")
    # Then the index lists and counts every one of them, newest first
    listed = list_sessions(prefix=label)
    assert sorted(s.uid for s in listed) == sorted(uids)
    assert [s.last_activity for s in listed] == sorted(
        (s.last_activity for s in listed), reverse=True
    )
    assert count_sessions(prefix=label) == 12
    assert [s.uid for s in list_sessions(prefix=label, offset=2, limit=3)] == [
        s.uid for s in listed[2:5]
    ]
    assert uids[0] in {s.uid for s in list_sessions(limit=10_000)}
    # ... and a deleted session leaves its state and the index
    assert delete_session(uids[0]) is True
    assert cluster_storage(uids[0]).tasks == {}
    assert count_sessions(prefix=label) == 11
    assert delete_session(uids[0]) is False
    for uid in uids[1:]:
        assert delete_session(uid) is True
    assert list_sessions(prefix=label) == []


def test_triggers_cleanup_deletes_old_sessions_on_every_master(settings: Any) -> None:
    from datetime import UTC, datetime, timedelta
    from io import StringIO

    from django.core.management import call_command

    from tests.test_retention import written_at

    # Given finished sessions (kept until deleted) last written 40 days ago,
    # on every master
    settings.TRIGGERS = {**settings.TRIGGERS, "TIMEOUT": None}
    label = f"old-{uuid.uuid4().hex[:8]}:"
    with properties.using_runner("threading"), written_at(datetime.now(UTC) - timedelta(days=40)):
        for n in range(8):
            manager = TriggerManager(cluster_storage(f"{label}{n}"))
            manager.update_configuration({"t_a": {"after": ["a"], "run": DEV}})
            manager.fire("a")
            ThreadingTaskRunner.join_all()  # (the task's own writes are old too)
    # When the cleanup runs
    out = StringIO()
    call_command("triggers_cleanup", "--resolved-older-than", "30d", "--prefix", label, stdout=out)
    # Then it deleted them all, state and index
    assert "Deleted 8 sessions" in out.getvalue()
    assert count_sessions(prefix=label) == 0
    assert cluster_storage(f"{label}0").tasks == {}


# -- properties ---------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configuration=properties.workflows(), fires=properties.fire_sequences, data=st.data())
def test_fires_in_any_order_end_as_the_model_predicts(
    configuration: dict[str, Any], fires: list[str], data: Any
) -> None:
    with properties.using_runner("prop-queue"):
        properties.check_any_order(configuration, fires, data)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configuration=properties.workflows(with_unless=False), fires=properties.fire_sequences)
def test_fires_from_several_threads_end_as_the_model_predicts(
    configuration: dict[str, Any], fires: list[str]
) -> None:
    with properties.using_runner("prop-threads"):
        properties.check_threads(configuration, fires)


def test_fires_from_several_processes_end_as_the_model_predicts() -> None:
    # (the child processes read REDIS_CLIENT from the environment)
    properties.test_fires_from_several_processes_at_once_end_as_the_model_predicts("cache")


# -- real processes and a real Celery worker on the cluster ------------------------


@pytest.fixture(scope="module")
def cluster_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """A Celery worker whose state is on the cluster, on the cluster queue
    (tests/settings.py: the environment names the cluster)."""
    log_path = tmp_path_factory.mktemp("celery-cluster") / "worker.log"
    worker = CeleryWorker(celery_app, log_path=log_path)
    worker.nodename = f"cluster-{os.getpid()}@%h"
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def cluster_pool() -> Iterator[ProcessPoolExecutor]:
    """Spawned processes that fire on the cluster and publish to the
    cluster worker's queue."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(concurrency.PROCESSES)
    with ProcessPoolExecutor(
        concurrency.PROCESSES,
        mp_context=context,
        initializer=init_spawned_process,
        initargs=(barrier,),
    ) as pool:
        yield pool


def test_200_triggers_from_4_processes_run_the_waiting_task_once(
    cluster_worker: CeleryWorker, cluster_pool: ProcessPoolExecutor, unique_uid: str
) -> None:
    concurrency.test_200_triggers_fired_from_4_processes_run_the_waiting_task_once(
        cluster_worker, cluster_pool, unique_uid, "cache"
    )


def test_and_every_from_4_processes_with_cascades_on_the_worker(
    cluster_worker: CeleryWorker, cluster_pool: ProcessPoolExecutor, unique_uid: str
) -> None:
    concurrency.test_and_every_fires_from_4_processes_make_one_instance_each(
        cluster_worker, cluster_pool, unique_uid, "cache"
    )


def test_the_worker_state_is_on_the_cluster(cluster_worker: CeleryWorker) -> None:
    # The cluster tests above would pass on one Redis too if everything fell
    # back to it: check the cluster holds their sessions, and the shared
    # single server does not.
    storage = cluster_storage(f"probe-{uuid.uuid4().hex}")
    pattern = "*:triggers:*test_200_triggers_from_4*"  # the session's keys, not test events
    found = keys_by_master(client_of(storage), pattern)
    assert Counter(bool(keys) for keys in found.values())[True] == 1
    from tests.contract_backends import redis_cache_client

    single = redis_cache_client()
    try:
        assert list(single.scan_iter(match=pattern, count=1000)) == []
    finally:
        single.close()
    ThreadingTaskRunner.join_all()


def keys_of(storage: CacheStorageBackend) -> list[bytes]:
    found = keys_by_master(client_of(storage), f"*{storage.uid}*")
    return [key for part in found.values() for key in part]
