"""Test-only parts for the fault tests (``tests/test_faults.py``) and the soak
(``benchmarks/soak.py``). The worker imports this module through
``tests.tasks``.

- :class:`GatedTask` records every start of its body, then (if asked) waits
  for a gate key, so a test can kill the process that runs it mid-task.
- :class:`CountingTask` records every run and returns at once (the soak and
  cascade counting).
- :class:`DyingManager` SIGKILLs its own process right before the commit that
  finishes an instance and fires its cascade, once per armed session.

Everything they record is a Redis list on the cache database named by
:func:`events_key`, so tests read it whichever process wrote it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.managers import read_events, record_event, redis_client
from triggers.manager import TriggerManager
from triggers.task import TaskContext, TriggerTask
from triggers.worker import Claim, WorkerProtocol


def events_key(uid: str, kind: str) -> str:
    return f"triggers-faults:{kind}:{uid}"


def record(uid: str, kind: str, **entry: Any) -> None:
    record_event(events_key(uid, kind), **entry)


def events(uid: str, kind: str) -> list[dict[str, Any]]:
    return read_events(events_key(uid, kind))


def gate_key(uid: str) -> str:
    return f"triggers-faults:gate:{uid}"


def die_key(uid: str) -> str:
    return f"triggers-faults:die-before-finish:{uid}"


class CountingTask(TriggerTask):
    """Records each run (instance, kwargs) and returns ``{'from': <instance>}``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        uid = context.manager.storage.uid
        record(uid, "runs", instance=context.instance_name, kwargs=context.trigger_kwargs)
        return {"from": context.instance_name}


class GatedTask(TriggerTask):
    """Records that its body started; if any trigger kwargs hold
    ``{'gated': true}`` it then waits (up to 60 s) for :func:`gate_key`."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        uid = context.manager.storage.uid
        record(uid, "started", instance=context.instance_name)
        gated = any(
            isinstance(kw, dict) and kw.get("gated") for kw in context.trigger_kwargs.values()
        )
        if gated:
            deadline = time.monotonic() + 60
            pause = threading.Event()
            while not redis_client().exists(gate_key(uid)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{context.instance_name}: gate never opened")
                pause.wait(0.01)
        record(uid, "runs", instance=context.instance_name)
        return {"from": context.instance_name}


class FireRecordingManager(TriggerManager):
    """Not registered: a worker rebuilds it from its dotted path. Records every
    ``_post_fire`` (cascades fired by its tasks included) as an event."""

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[Any]) -> None:
        record(self.storage.uid, "post_fire", trigger=trigger_name, pid=os.getpid())


def broken_claim_key(uid: str) -> str:
    return f"triggers-faults:break-claim:{uid}"


class BrokenClaimWorker(WorkerProtocol):
    """Each claim decrements :func:`broken_claim_key`; from 1000 up it fails
    with a non-transient error (a bug between dispatch and the task body),
    from 0 up with a Redis timeout (transient), below 0 it claims."""

    def claim(self, name: str, token: str, lease_ms: int) -> Claim:
        left = redis_client().decr(broken_claim_key(self.storage.uid))
        if left >= 1000:
            raise RecursionError("maximum recursion depth exceeded while claiming (injected)")
        if left >= 0:
            # A Redis that does not answer, this many more times.
            raise RedisTimeoutError("Timeout reading from socket (injected)")
        return super().claim(name, token, lease_ms)


class BrokenClaimManager(TriggerManager):
    """Not registered; its runs claim through :class:`BrokenClaimWorker`."""

    worker_class = BrokenClaimWorker


class DyingWorker(WorkerProtocol):
    """Dies (SIGKILL, no cleanup) right before the commit that would store an
    instance's result and fire its cascade, if :func:`die_key` is set for the
    session; the key is consumed, so the redelivered run goes through."""

    def finish(
        self, name: str, token: str, result: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> bool:
        # GETDEL as a raw command: redis-py 3 (the django-redis-cache env) has no getdel().
        if redis_client().execute_command("GETDEL", die_key(self.storage.uid)):
            record(self.storage.uid, "dying", instance=name)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().finish(name, token, result, metadata)


class DyingManager(TriggerManager):
    """Runs through :class:`DyingWorker`."""

    worker_class = DyingWorker
