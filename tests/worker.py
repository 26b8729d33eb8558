"""A real Celery worker process for tests (used by the ``celery_worker`` fixture).

The worker runs in its own session and process group, so stopping it also
reaches its pool processes and nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from celery import Celery
from celery.utils.nodenames import host_format

ROOT = Path(__file__).resolve().parent.parent


class WorkerError(RuntimeError):
    """The worker died or did not become ready."""


def purge_broker(app: Celery) -> int:
    """Drop messages left in the test queues by earlier runs; return how many."""
    purged = app.control.purge() or 0
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        # With acks_late, messages a killed worker had reserved sit in kombu's
        # "unacked" bookkeeping and would be restored into the queue later.
        with app.connection_for_write() as connection:
            client = connection.default_channel.client
            prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
            client.delete(*(f"{prefix}{k}" for k in ("unacked", "unacked_index", "unacked_mutex")))
    return purged


def delete_run_queue(app: Celery) -> None:
    """Remove this run's queue from an AMQP broker (each run declares its own,
    and RabbitMQ would keep them all). On Redis the queue is a list that
    disappears once empty."""
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        return
    queue = app.amqp.queues[app.conf.task_default_queue]
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(queue.name)
        channel.exchange_delete(queue.exchange.name)


class CeleryWorker:
    """Start, stop and inspect one ``celery worker`` process."""

    def __init__(
        self,
        app: Celery,
        concurrency: int = 2,
        loglevel: str = "info",
        ready_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.ready_timeout = ready_timeout
        self.nodename = f"test-{os.getpid()}@%h"
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="triggers-celery-worker-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    # -- inspection ---------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def child_pids(self) -> list[int]:
        """PIDs of the worker's direct children (its prefork pool processes)."""
        if not self.is_alive():
            return []
        assert self.pid is not None
        children: set[int] = set()
        for task_dir in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                text = (task_dir / "children").read_text()
            except OSError:
                continue
            children.update(int(pid) for pid in text.split())
        return sorted(children)

    def group_pids(self) -> list[int]:
        """Every live process in the worker's process group (main one included)."""
        if self.process is None:
            return []
        pgid = self.process.pid
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            # Field 5 is the pgrp; the command name (field 2) may contain spaces.
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return sorted(found)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> CeleryWorker:
        if self.is_alive():
            raise WorkerError(f"worker {self.pid} is already running")
        command = [
            sys.executable, "-m", "celery",
            "-A", "tests.celery_app",
            "worker",
            "-P", "prefork",
            "-c", str(self.concurrency),
            "-l", self.loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", self.nodename,
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        # TRIGGERS_TEST_REDIS_URL was exported when tests.settings resolved the
        # server, so the worker reuses it rather than resolving its own.
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== starting worker: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        destination = [host_format(self.nodename)]
        while time.monotonic() < deadline:
            if not self.is_alive():
                assert self.process is not None
                self._fail(f"worker exited with code {self.process.returncode} during startup")
            if self.app.control.ping(destination=destination, timeout=0.5):
                return
        self.stop(graceful=False)
        self._fail(f"worker not ready after {self.ready_timeout:g}s")

    def _fail(self, reason: str) -> None:
        tail = self.log_tail()
        message = f"Celery {reason}. Log {self.log_path}, last lines:\n{tail}"
        print(message, file=sys.stderr)
        raise WorkerError(message)

    def stop(self, graceful: bool = True, timeout: float = 15.0) -> None:
        """Stop the worker: SIGTERM (warm shutdown) first, then SIGKILL the group.

        ``graceful=False`` skips straight to SIGKILL, like a machine dying.
        """
        if self.process is None:
            return
        pgid = self.process.pid
        if graceful and self.process.poll() is None:
            # Only the main process: it finishes running tasks and stops its pool.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        # Pool processes orphaned by the kill are reparented and reaped by
        # init; wait until none is left in the group.
        deadline = time.monotonic() + 10
        while self.group_pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        leftover = self.group_pids()
        if leftover:
            raise WorkerError(f"worker processes {leftover} survived SIGKILL")

    def kill(self) -> None:
        """SIGKILL the whole worker at once (main process and pool)."""
        self.stop(graceful=False)

    def restart(self, graceful: bool = True) -> CeleryWorker:
        """Stop and start again; queued messages are kept (no purge)."""
        self.stop(graceful=graceful)
        return self.start()

    def ensure_running(self) -> CeleryWorker:
        """Start the worker again if a test left it stopped or it died."""
        if not self.is_alive():
            self.start()
        return self
