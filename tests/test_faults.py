"""The fault matrix (docs/operations.rst): what survives a killed process, a
killed worker, a dead broker, a Redis connection that drops mid-fire, and a
session whose state vanished. Real processes, real Redis, a real worker."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.test import override_settings

from tests.fault_tasks import CountingTask, DyingManager, GatedTask, die_key, events, gate_key
from tests.test_locking import read_message, start_child
from tests.utils import wait_for
from triggers import conf
from triggers.exceptions import InstanceStateError, SessionLostError
from triggers.manager import TriggerManager
from triggers.runners.threading import ThreadingTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.types import TaskInstance

ROOT = Path(__file__).resolve().parent.parent
#: Worker lease (seconds) while this module's worker tests run, so a takeover
#: after a killed worker takes seconds, not the default 10.
LEASE = 2


def new_manager(uid: str, cls: type[TriggerManager] = TriggerManager) -> TriggerManager:
    return cls(CacheStorageBackend(uid))


def status(manager: TriggerManager, name: str) -> str | None:
    instances = manager.storage.instances
    return instances[name].status if name in instances else None


def instance_names(manager: TriggerManager, task: str) -> list[str]:
    return [i.name for i in manager.storage.instances_of_task(task)]


def runs_of(uid: str, instance: str, kind: str = "runs") -> list[dict[str, Any]]:
    return [e for e in events(uid, kind) if e["instance"] == instance]


SLOW_THEN_COUNT = {
    "t_slow": {"after": ["go"], "run": GatedTask.name},
    # A new instance per cascade: a second cascade would show as t_count#1.
    "t_count": {"after": ["t_slow"], "andEvery": "t_slow", "run": CountingTask.name},
}


# -- 1. a process is SIGKILLed while it holds the session lock -----------------

HOLD_DURING_COMMIT = """
class StopBeforeCommit(CacheStorageBackend):
    stop = False
    def commit(self, lock, changes, release):
        if self.stop and changes:
            say(holding=True, lock=lock.key)
            sys.stdin.read()  # until killed
        return super().commit(lock, changes, release)

manager = TriggerManager(StopBeforeCommit(sys.argv[1]))
manager.fire("first", {"n": 1})
manager.storage.stop = True
manager.fire("second", {"n": 2})
"""


def test_a_fire_killed_between_read_and_commit_loses_nothing_committed_before(
    children, redis_client, unique_uid
):
    # Given a session and a process that fired "first", then is half-way
    # through firing "second": it has read the session and holds its lock
    manager = new_manager(unique_uid)
    manager.update_configuration(
        {"t_all": {"after": ["first", "second", "third"], "run": CountingTask.name}}
    )
    child = start_child(unique_uid, HOLD_DURING_COMMIT)
    children.append(child)
    holding = read_message(child)
    assert redis_client.exists(holding["lock"])

    # When the process is SIGKILLed while holding the lock
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)

    # Then the next fire succeeds within the lock expiry (+ one poll) ...
    started = time.monotonic()
    manager.fire("third", {"n": 3})
    waited = time.monotonic() - started
    assert waited < conf.get("LOCK_EXPIRE") + 2.5, f"next fire waited {waited:.1f}s"
    # ... what the killed process committed is all there, and nothing of the
    # fire it did not finish
    inst = manager.storage["t_all#0"]
    assert inst.kwargs == {"first": {"n": 1}, "third": {"n": 3}}
    assert inst.status == TaskInstance.STATUS_UNSTARTED
    assert set(manager.storage.latest_kwargs) == {"first", "third"}
    assert manager.waiting_on() == {"t_all#0": ["second"]}


# -- 4. the broker is down when a fire makes an instance ready ---------------

FIRE_WITHOUT_BROKER = """
started = time.monotonic()
try:
    manager.fire("go", {"payload": [1, 2, 3]})
except Exception as exc:
    say(error=type(exc).__name__, message=str(exc), seconds=time.monotonic() - started)
else:
    say(error=None, seconds=time.monotonic() - started)
"""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections but never answers (a hung broker)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "broker, bound",
    [
        # Refused: Celery's publish retry policy (about 0.6 s).
        ("redis://:s3cret@127.0.0.1:{closed}/2", 3),
        ("amqp://guest:s3cret@127.0.0.1:{closed}//", 3),
        # Hung: BROKER_TIMEOUT (5 s) / Celery's broker_connection_timeout (4 s).
        ("redis://:s3cret@127.0.0.1:{silent}/2", 10),
        ("amqp://guest:s3cret@127.0.0.1:{silent}//", 10),
    ],
    ids=["redis-refused", "amqp-refused", "redis-hung", "amqp-hung"],
)
def test_a_fire_while_the_broker_is_down_keeps_the_trigger_and_is_resent_later(
    celery_worker, children, monkeypatch, unique_uid, broker, bound, closed_port, silent_port
):
    # Given a session whose task becomes ready on "go"
    manager = new_manager(unique_uid)
    manager.update_configuration({"t_go": {"after": ["go"], "run": CountingTask.name}})

    # When a process whose broker is unreachable fires it
    url = broker.format(closed=closed_port, silent=silent_port)
    monkeypatch.setenv("TRIGGERS_TEST_BROKER_URL", url)  # read by the child's settings
    child = start_child(unique_uid, FIRE_WITHOUT_BROKER)
    children.append(child)
    outcome = read_message(child, timeout=30)

    # Then fire() raises DispatchError within seconds, not minutes ...
    assert outcome["error"] == "DispatchError", outcome
    assert outcome["seconds"] < bound, outcome
    # ... naming the broker it tried, without its password
    assert url.replace("s3cret", "**") in outcome["message"], outcome
    assert "s3cret" not in outcome["message"]
    # ... the trigger and its kwargs are recorded, and the instance is ready
    # but not marked scheduled
    inst = manager.storage["t_go#0"]
    assert inst.status == TaskInstance.STATUS_UNSTARTED and inst.can_run
    assert inst.kwargs == {"go": {"payload": [1, 2, 3]}}
    assert "dispatch_error" in inst.metadata
    assert manager.storage.latest_kwargs["go"] == {"payload": [1, 2, 3]}
    assert [i.name for i in manager.find_stuck_instances(older_than=0)] == ["t_go#0"]

    # When the broker is back and the ready instances are re-sent
    resent = manager.resend_ready_instances()

    # Then the worker runs it once, with the kwargs fired while it was down
    assert [i.name for i in resent] == ["t_go#0"]
    wait_for(lambda: status(manager, "t_go#0") == TaskInstance.STATUS_FINISHED, timeout=20)
    (run,) = runs_of(unique_uid, "t_go#0")
    assert run["kwargs"] == {"go": {"payload": [1, 2, 3]}}
    assert "dispatch_error" not in manager.storage["t_go#0"].metadata


# -- 5. Redis connection errors in the middle of a fire ------------------------


class FailingCommitStorage(CacheStorageBackend):
    """Loses its Redis connection after reading, right before writing."""

    fail_next_commit = False

    def commit(self, lock: Any, changes: Any, release: bool) -> None:
        if self.fail_next_commit and changes:
            self.fail_next_commit = False
            raise redis.ConnectionError("connection reset by peer (injected)")
        return super().commit(lock, changes, release)


def test_a_connection_error_before_the_commit_writes_nothing_and_frees_the_lock(unique_uid):
    # Given a session with a pending instance
    storage = FailingCommitStorage(unique_uid)
    manager = TriggerManager(storage)
    manager.update_configuration(
        {"t_two": {"after": ["a", "b"], "run": CountingTask.name, "using": "threading"}}
    )
    manager.fire("a", {"n": 1})
    before = storage.debug_repr()

    # When the connection fails between the fire's read and its write
    storage.fail_next_commit = True
    with pytest.raises(redis.ConnectionError):
        manager.fire("b", {"n": 2})

    # Then the session is exactly as before (no half-applied fire) ...
    assert storage.debug_repr() == before
    # ... and the lock was released: the retry goes through at once
    started = time.monotonic()
    (scheduled,) = manager.fire("b", {"n": 2})
    assert time.monotonic() - started < 1.0
    assert scheduled.kwargs == {"a": {"n": 1}, "b": {"n": 2}}


class RedisProxy:
    """A TCP proxy in front of Redis that can drop the next reply (the server
    did the work, the client never hears) or cut every connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.drop_next_reply = threading.Event()
        self.dropped = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._closed:
                client.close()
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.drop_next_reply.is_set():
                    self.drop_next_reply.clear()
                    self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        """Go down: refuse new connections and cut the open ones."""
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class ResendingRedis(redis.Redis):
    """A client that re-sends a command whose connection dropped, up to 3
    times: what ``retry=Retry(NoBackoff(), 3)`` does on redis-py >= 4.1, for
    redis-py 3 (the django-redis-cache env), which only retries timeouts."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        for _ in range(3):
            try:
                return super().execute_command(*args, **options)
            except redis.ConnectionError:
                pass  # redis-py dropped the connection; the next call reconnects
        return super().execute_command(*args, **options)


def retrying_client(port: int, db: int) -> redis.Redis:
    """A client that retries a command at once, 3 times, when its
    connection drops (a common production setting). Before redis-py 6 a
    client retries only the errors ``retry_on_error`` lists."""
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:  # redis-py < 4.1
        return ResendingRedis(port=port, db=db, socket_timeout=5)
    return redis.Redis(
        port=port,
        db=db,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[redis.ConnectionError],
        socket_timeout=5,
    )


class ProxiedStorage(CacheStorageBackend):
    """Talks to Redis through a :class:`RedisProxy`, with a client that
    retries commands on connection errors (:func:`retrying_client`)."""

    proxy: RedisProxy
    lose_commit_reply = False
    lose_redis_before_commit = False

    def __init__(self, uid: str, proxy: RedisProxy) -> None:
        super().__init__(uid)
        assert self._redis is not None
        db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self._redis = retrying_client(proxy.port, db)
        self.proxy = proxy

    def commit(self, lock: Any, changes: Any, release: bool) -> None:
        if self.lose_commit_reply and changes:
            self.lose_commit_reply = False
            self.proxy.drop_next_reply.set()
        if self.lose_redis_before_commit and changes:
            self.proxy.close()
        return super().commit(lock, changes, release)


@pytest.fixture
def redis_proxy(redis_client) -> Iterator[RedisProxy]:
    kwargs = redis_client.connection_pool.connection_kwargs
    proxy = RedisProxy((kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))))
    yield proxy
    proxy.close()


def test_a_commit_whose_reply_is_lost_is_applied_exactly_once(redis_proxy, unique_uid):
    # Given a task that gets a new instance on every "tick" (so a fire applied
    # twice would show as a second instance), reached through a proxy
    storage = ProxiedStorage(unique_uid, redis_proxy)
    manager = TriggerManager(storage)
    manager.update_configuration(
        {"t_tick": {"after": ["tick", "never"], "andEvery": "tick", "run": CountingTask.name}}
    )

    # When the connection drops after Redis applied the fire's commit but
    # before the reply arrived, and the client retries the command
    storage.lose_commit_reply = True
    manager.fire("tick", {"n": 1})

    # Then the fire took effect once: one instance, the trigger recorded once
    assert redis_proxy.dropped == 1
    assert instance_names(manager, "t_tick") == ["t_tick#0"]
    assert manager.storage["t_tick#0"].kwargs == {"tick": {"n": 1}}


def test_redis_gone_mid_fire_leaves_no_trace_and_its_lock_expires(
    redis_proxy, redis_client, unique_uid
):
    # Given a session reached through a proxy, with one trigger fired
    storage = ProxiedStorage(unique_uid, redis_proxy)
    manager = TriggerManager(storage)
    manager.update_configuration(
        {"t_two": {"after": ["a", "b"], "run": CountingTask.name, "using": "threading"}}
    )
    manager.fire("a", {"n": 1})
    other = new_manager(unique_uid)
    before = other.storage.debug_repr()

    # When Redis becomes unreachable after a fire read the session and took
    # its lock, before it could write
    storage.lose_redis_before_commit = True
    with pytest.raises(redis.ConnectionError):
        manager.fire("b", {"n": 2})

    # Then nothing of that fire was written, and the lock it could not
    # release is still there ...
    assert other.storage.debug_repr() == before
    assert redis_client.keys(f"lock:*{unique_uid}}}:lock")
    # ... until it expires: another process fires within LOCK_EXPIRE + a poll
    started = time.monotonic()
    (scheduled,) = other.fire("b", {"n": 2})
    waited = time.monotonic() - started
    assert waited < conf.get("LOCK_EXPIRE") + 2.5, f"waited {waited:.1f}s"
    assert scheduled.kwargs == {"a": {"n": 1}, "b": {"n": 2}}


# -- 7. a session's state vanished ---------------------------------------------


def session_keys(redis_client, uid: str) -> list[bytes]:
    """The session's state keys (not its lock's)."""
    found = redis_client.scan_iter(match=f"*triggers:{{{len(uid)}:{uid}}}:*")
    return sorted(k for k in found if not k.startswith(b"lock"))


def test_a_fire_into_a_session_that_vanished_raises_instead_of_starting_over(
    redis_client, unique_uid
):
    # Given a configured session that has run part of its workflow
    manager = new_manager(unique_uid)
    manager.update_configuration(
        {"t_one": {"after": ["a", "b"], "run": CountingTask.name, "using": "threading"}}
    )
    manager.fire("a")

    # When its keys vanish (eviction, expiry, a Redis restart without
    # persistence) and the same process fires again
    redis_client.delete(*session_keys(redis_client, unique_uid))
    with pytest.raises(SessionLostError):
        manager.fire("b")

    # Then nothing was written: the session is not silently started over
    assert session_keys(redis_client, unique_uid) == []


@pytest.mark.parametrize(
    "lost, trigger",
    [
        ("config", "b"),
        ("meta", "b"),
        ("instances", "b"),
        ("index", "c"),
        # Without the counters a new instance would be numbered #0 again and
        # overwrite (and re-run) the one that exists.
        ("counters", "c"),
        # Without the kwargs a new instance would not be seeded with "a".
        ("kwargs", "c"),
    ],
)
def test_a_fresh_process_notices_a_partly_vanished_session(redis_client, unique_uid, lost, trigger):
    # Given a configured session with an instance waiting on "b", and a task
    # added after "a" fired, whose first instance "c" would create
    manager = new_manager(unique_uid)
    manager.update_configuration(
        {"t_one": {"after": ["a", "b"], "run": CountingTask.name, "using": "threading"}}
    )
    manager.fire("a")
    manager.update_configuration({"t_new": {"after": ["a", "c", "d"], "run": CountingTask.name}})
    # When one of its keys is evicted
    (key,) = [k for k in session_keys(redis_client, unique_uid) if k.endswith(f":{lost}".encode())]
    redis_client.delete(key)
    before = session_keys(redis_client, unique_uid)

    # Then a storage object that never saw the session (another process, the
    # next web request) refuses to fire into it, and writes nothing
    fresh = new_manager(unique_uid)
    with pytest.raises(SessionLostError):
        fresh.fire(trigger)
    assert session_keys(redis_client, unique_uid) == before


@pytest.mark.parametrize(
    "lost, config, fires, then",
    [
        # Issue 9 item 2: without the waiting index, "b" found nobody waiting
        # and returned [] while t_two#0 waited for it forever.
        ("waiting", {"t_two": {"after": ["a", "b"]}}, ["a"], "b"),
        # Without the latest kwargs, the next andEvery instance waited
        # forever for "a", which had already fired.
        ("kwargs", {"t_each": {"after": ["a"], "andEvery": "tick"}}, ["a", "tick"], "tick"),
    ],
)
def test_a_fire_that_would_go_wrong_without_a_lost_part_names_it(
    redis_client, unique_uid, lost, config, fires, then
):
    manager = new_manager(unique_uid)
    manager.update_configuration(
        {n: {**c, "run": CountingTask.name, "using": "threading"} for n, c in config.items()}
    )
    for trigger in fires:
        manager.fire(trigger)
    ThreadingTaskRunner.join_all()
    (key,) = [k for k in session_keys(redis_client, unique_uid) if k.endswith(f":{lost}".encode())]
    redis_client.delete(key)
    before = session_keys(redis_client, unique_uid)

    for fresh in (manager, new_manager(unique_uid)):  # this process and another
        with pytest.raises(SessionLostError, match=lost):
            fresh.fire(then)
    assert session_keys(redis_client, unique_uid) == before


def test_the_restart_policy_starts_a_vanished_session_over(redis_client, unique_uid):
    # Given a session that vanished, and ON_LOST_SESSION = 'restart'
    manager = new_manager(unique_uid)
    manager.update_configuration({"t_one": {"after": ["a"], "run": CountingTask.name}})
    manager.storage.create_instance("t_one")
    redis_client.delete(*session_keys(redis_client, unique_uid))
    with override_settings(TRIGGERS={**conf.DEFAULTS, "ON_LOST_SESSION": "restart"}):
        # When a trigger fires into it
        assert manager.fire("a") == []
    # Then it is recorded in a fresh, empty session
    assert manager.storage.latest_kwargs == {"a": {}}
    assert manager.storage.tasks == {}


# -- 2, 3 and 6: a worker that dies ----------------------------------------------


@pytest.fixture(scope="module")
def short_lease_worker(celery_worker: Any) -> Iterator[Any]:
    os.environ["TRIGGERS_TEST_LEASE"] = str(LEASE)
    celery_worker.restart()
    try:
        yield celery_worker
    finally:
        os.environ.pop("TRIGGERS_TEST_LEASE", None)
        celery_worker.restart()


def test_a_worker_process_killed_mid_task_is_redelivered_and_finishes_once(
    short_lease_worker, redis_client, unique_uid
):
    # Given a slow task running in a worker process
    manager = new_manager(unique_uid)
    manager.update_configuration(SLOW_THEN_COUNT)
    manager.fire("go", {"gated": True})
    (first,) = wait_for(lambda: runs_of(unique_uid, "t_slow#0", "started"), timeout=20)

    # When that process is SIGKILLed mid-task (and the task could now finish)
    os.kill(first["pid"], signal.SIGKILL)
    redis_client.set(gate_key(unique_uid), 1, ex=300)

    # Then the message is redelivered; once the dead run's lease lapsed another
    # process takes over, and the instance finishes and cascades exactly once
    wait_for(lambda: status(manager, "t_count#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    inst = manager.storage["t_slow#0"]
    assert inst.status == TaskInstance.STATUS_FINISHED
    assert inst.metadata["attempts"] == 2 and inst.metadata["takeovers"] == 1
    starts = runs_of(unique_uid, "t_slow#0", "started")
    assert len(starts) == 2 and starts[1]["pid"] != first["pid"]
    assert len(runs_of(unique_uid, "t_slow#0")) == 1
    assert instance_names(manager, "t_count") == ["t_count#0"]
    assert len(runs_of(unique_uid, "t_count#0")) == 1


def test_a_worker_dying_between_task_and_cascade_commit_cascades_exactly_once(
    short_lease_worker, redis_client, unique_uid
):
    # Given a manager whose worker process dies right before the commit that
    # stores the result and fires the cascade (once)
    manager = new_manager(unique_uid, DyingManager)
    manager.update_configuration(SLOW_THEN_COUNT)
    redis_client.set(die_key(unique_uid), 1, ex=300)

    # When the task runs
    manager.fire("go")

    # Then the redelivered message runs it again and the finish + cascade
    # happen exactly once
    wait_for(lambda: status(manager, "t_count#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    assert len(events(unique_uid, "dying")) == 1
    assert len(runs_of(unique_uid, "t_slow#0")) == 2  # the body is at-least-once
    inst = manager.storage["t_slow#0"]
    assert inst.status == TaskInstance.STATUS_FINISHED
    assert inst.metadata["result"] == {"from": "t_slow#0"}
    assert instance_names(manager, "t_count") == ["t_count#0"]
    assert len(runs_of(unique_uid, "t_count#0")) == 1


def test_an_instance_stuck_after_its_whole_worker_died_is_reported_and_resent(
    short_lease_worker, redis_client, unique_uid
):
    # Given a task running on a worker
    manager = new_manager(unique_uid)
    manager.update_configuration(SLOW_THEN_COUNT)
    manager.fire("go", {"gated": True})
    wait_for(lambda: runs_of(unique_uid, "t_slow#0", "started"), timeout=20)

    # When the whole worker (machine) dies: its unacknowledged message will
    # not come back before the broker's visibility timeout
    short_lease_worker.kill()
    short_lease_worker.start()
    redis_client.set(gate_key(unique_uid), 1, ex=300)

    # Then, once its lease lapsed, the instance is reported as stuck ...
    stuck = wait_for(lambda: manager.find_stuck_instances(older_than=0), timeout=LEASE + 5)
    assert [(i.name, i.status) for i in stuck] == [("t_slow#0", "running")]
    assert manager.find_stuck_instances() == []  # younger than STUCK_AFTER
    out = io.StringIO()
    call_command("triggers_inspect", unique_uid, "--json", "--stuck-after", "0", stdout=out)
    report = json.loads(out.getvalue())
    assert [row["name"] for row in report["instances"] if row["stuck"]] == ["t_slow#0"]

    # ... and the management command re-sends it; it finishes and cascades once
    call_command("triggers_resend", unique_uid, "--older-than", "0", verbosity=0)
    wait_for(lambda: status(manager, "t_count#0") == TaskInstance.STATUS_FINISHED, timeout=30)
    inst = manager.storage["t_slow#0"]
    assert inst.metadata["resent_from_running"] and inst.metadata["attempts"] == 2
    assert len(runs_of(unique_uid, "t_slow#0")) == 1
    assert instance_names(manager, "t_count") == ["t_count#0"]


def test_resending_a_finished_instance_is_refused(unique_uid):
    manager = new_manager(unique_uid)
    manager.update_configuration({"t_go": {"after": ["go"], "run": CountingTask.name}})
    manager.storage.create_instance("t_go")
    manager.update_instance_status("t_go#0", TaskInstance.STATUS_FINISHED)
    # A finished instance is never sent again (it would not run anyway)
    with pytest.raises(InstanceStateError, match="finished"):
        manager.resend_instance("t_go#0")
