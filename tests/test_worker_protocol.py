"""The public worker protocol (triggers.worker), driven by hand as a runner
of a project's own would drive it: claim, finish with cascade, fail, skip,
retry and lease renewal, on real Redis, with no TriggerTask involved."""

from __future__ import annotations

import uuid

from triggers.manager import TriggerManager
from triggers.runners import task_runners
from triggers.runners.base import BaseTaskRunner
from triggers.storages.cache import CacheStorageBackend
from triggers.testing import DevNullTask
from triggers.types import TaskInstance
from triggers.worker import WorkerProtocol


class HoldingRunner(BaseTaskRunner):
    """Takes instances and runs nothing: the test is the worker."""

    name = "worker-protocol-hold"
    received: list[str] = []

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        self.received.append(task_instance.name)


task_runners.register(HoldingRunner.name, HoldingRunner)

WORKFLOW = {
    "t_first": {"after": ["go"], "run": DevNullTask.name, "using": HoldingRunner.name},
    "t_next": {"after": ["t_first"], "run": DevNullTask.name, "using": HoldingRunner.name},
}


def session(uid: str) -> tuple[TriggerManager, WorkerProtocol]:
    manager = TriggerManager(CacheStorageBackend(uid))
    manager.update_configuration(WORKFLOW)
    manager.fire("go", {"n": 1})
    return manager, manager.worker


def token() -> str:
    return uuid.uuid4().hex


def test_a_claim_is_exclusive_while_its_lease_lives_and_a_finish_cascades(
    unique_uid: str,
) -> None:
    # Given an instance handed to a runner
    manager, worker = session(unique_uid)
    mine, theirs = token(), token()
    # When one run claims it, a second run finds it busy
    claim = worker.claim("t_first#0", mine, 30_000)
    assert claim.outcome == "run" and claim.instance is not None
    assert claim.instance.kwargs == {"go": {"n": 1}}
    busy = worker.claim("t_first#0", theirs, 30_000)
    assert busy.outcome == "busy" and 0 < busy.wait_ms <= 30_000
    # and only the owner may renew the lease or end the run
    assert worker.renew_lease("t_first#0", mine, 30_000)
    assert not worker.renew_lease("t_first#0", theirs, 30_000)
    assert not worker.fail("t_first#0", theirs, {"why": "not mine"})
    # When the owner finishes it
    assert worker.finish("t_first#0", mine, {"r": 2}, {"duration": 0.1})
    # Then the result is stored and the cascade made the next task ready
    done = manager.storage["t_first#0"]
    assert done.status == "finished" and done.metadata["result"] == {"r": 2}
    nxt = manager.storage["t_next#0"]
    assert nxt.status == "scheduled" and nxt.kwargs == {"t_first": {"r": 2}}
    # and a late message for the finished instance is told it is done
    late = worker.claim("t_first#0", token(), 30_000)
    assert late.outcome == "done" and late.instance is not None
    assert late.instance.status == "finished"


def test_fail_skip_and_retry_end_a_run_once(unique_uid: str) -> None:
    manager, worker = session(unique_uid)
    run = token()
    worker.claim("t_first#0", run, 30_000)
    # A retry replays the run into a clone, ready to run after its cooldown
    clone = worker.retry("t_first#0", run, {"attempt": 1}, None, 5.0)
    assert clone is not None and clone.name == "t_first#1"
    assert manager.storage["t_first#0"].status == "replayed"
    assert manager.storage["t_first#1"].metadata["cooldown"] == 5.0
    # The clone's run skips itself: nothing cascades
    again = token()
    assert worker.claim("t_first#1", again, 30_000).outcome == "run"
    assert worker.skip("t_first#1", again, {"reason": "nothing to do"})
    assert manager.storage["t_first#1"].status == "skipped"
    assert "t_next#0" not in manager.storage
    # and ending it a second time changes nothing
    assert not worker.fail("t_first#1", again, {})


def test_a_run_that_cannot_start_fails_the_instance_for_an_operator(unique_uid: str) -> None:
    manager, worker = session(unique_uid)
    assert worker.fail_unstarted("t_first#0", {"exc_message": "cannot build the task"})
    inst = manager.storage["t_first#0"]
    assert inst.status == "failed" and inst.can_replay
    # A missing instance or session is a message to drop, not an error
    assert worker.claim("t_first#9", token(), 1000).reason == "no such instance"
    gone = TriggerManager(CacheStorageBackend(f"{unique_uid}-never")).worker
    assert gone.claim("t_first#0", token(), 1000).reason == "the session has vanished"
