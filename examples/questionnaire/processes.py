"""The processes the questionnaire demo starts (a Celery worker, two firing
processes, a timer sweeper) and how it stops them: each in its own session,
stopped with SIGTERM then SIGKILL of its whole group, and killed with the
demo if the demo itself dies."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.embedded_redis import die_with_parent

if TYPE_CHECKING:
    from examples.questionnaire.demo import Fire

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Client", "DemoError", "Sweeper", "Worker", "stop_process"]


class DemoError(RuntimeError):
    """Something the demo needs could not be set up."""


def _popen(command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    # Own session: a Ctrl-C reaches only the demo, which stops these in order.
    # die_with_parent: they stop even if the demo itself is killed.
    return subprocess.Popen(
        command,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
        **kwargs,
    )


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL the whole process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=timeout)
    # Killed pool processes are reaped by init; wait (briefly: an init that
    # never reaps would leave zombies) until the group is gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


class Worker:
    """A real ``celery worker`` process on the demo's broker."""

    def __init__(self, run_id: str, concurrency: int, log_path: Path) -> None:
        self.nodename = f"qdemo-{run_id}@%h"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "celery", "-A", "examples.questionnaire.celery_app",
            "worker", "-P", "prefork", "-c", str(concurrency), "-l", "warning",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", self.nodename,
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            self.process = _popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        from celery.utils.nodenames import host_format

        from examples.questionnaire.celery_app import app

        destination = [host_format(self.nodename)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if app.control.ping(destination=destination, timeout=0.5):
                return
        tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
        raise DemoError("the Celery worker did not start:\n" + "\n".join(tail))

    def stop(self) -> None:
        stop_process(self.process, timeout=15)


class Sweeper:
    """``manage.py triggers_timers --loop``: applies due timers (the deadline)."""

    def __init__(self, log_path: Path) -> None:
        command = [sys.executable, "-m", "django", "triggers_timers", "--loop", "--interval", "0.2"]
        with open(log_path, "ab") as log:
            self.process = _popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        stop_process(self.process)


class Client:
    """A firing process (``examples.questionnaire.client``): one "web server"."""

    def __init__(self, name: str) -> None:
        self.name = name
        command = [sys.executable, "-m", "examples.questionnaire.client", name]
        self.process = _popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def _reply(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            code = self.process.poll()
            state = f"exited with {code}" if code is not None else f"silent for {timeout:g}s"
            raise DemoError(f"firing process {self.name} {state}")
        return line.strip()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if self._reply(timeout) != "ready":
            raise DemoError(f"firing process {self.name} did not start")

    def send(self, fires: list[Fire]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([f.as_dict() for f in fires]) + "\n")
        self.process.stdin.flush()

    def wait_done(self, timeout: float = 60.0) -> None:
        if self._reply(timeout) != "done":
            raise DemoError(f"firing process {self.name} failed")

    def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
