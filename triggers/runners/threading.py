"""Runs each ready instance in a thread of this process (tests, scripts)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .base import BaseTaskRunner, build_message

if TYPE_CHECKING:
    from ..manager import TriggerManager
    from ..types import TaskInstance

logger = logging.getLogger(__name__)


class ThreadingTaskRunner(BaseTaskRunner):
    name = "threading"

    _threads: list[threading.Thread] = []
    _threads_lock = threading.Lock()
    _stop = threading.Event()

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        task = self.resolve(task_instance.config.run, task_instance.config.name)
        message = build_message(manager, task_instance)
        cooldown = float(task_instance.metadata.get("cooldown") or 0)
        thread = threading.Thread(
            target=self._execute,
            # The manager itself, not a registry key: an unregistered custom
            # manager (a class in a test function, in __main__) runs as is.
            args=(task, message, cooldown, manager),
            name=f"triggers-{task_instance.name}",
            daemon=True,
        )
        txn = manager.storage.current_transaction
        if txn is None:
            self._start(thread)
            return
        # Started once the dispatching transaction is written and its hooks
        # ran: the thread's own fires (its cascade) then follow its cause in
        # hook order too, and nothing starts for a transaction that fails.
        # The first callback queues the start behind every hook the
        # operation queues after dispatching (``_post_fire`` among them).
        txn.after_commit.append(lambda: txn.after_commit.append(lambda: self._start(thread)))

    @classmethod
    def _start(cls, thread: threading.Thread) -> None:
        with cls._threads_lock:
            cls._threads.append(thread)
            # Started under the lock: join_all() drops threads that are not
            # alive, and one appended but not yet started is not.
            thread.start()

    @classmethod
    def _execute(
        cls, task: Any, message: dict[str, Any], cooldown: float, manager: Any = None
    ) -> None:
        if cooldown and cls._stop.wait(cooldown):
            return
        try:
            task.execute_message(message, requeue=None, manager=manager)
        except BaseException as exc:
            if getattr(exc, "_triggers_recorded", False):
                return  # on the instance (failed) and logged already
            # Nobody to propagate to from a thread: never lose it silently.
            logger.error(
                "task thread for %s in session %r ended with %s: %s",
                message.get("instance"),
                message.get("uid"),
                type(exc).__name__,
                exc,
                exc_info=True,
                extra={
                    "triggers_session": message.get("uid"),
                    "triggers_instance": message.get("instance"),
                },
            )

    @classmethod
    def join_all(cls, timeout: float | None = 60.0) -> None:
        """Wait until every thread started by this runner has ended, including
        the ones their cascades started."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with cls._threads_lock:
                alive = [t for t in cls._threads if t.is_alive()]
                cls._threads[:] = alive
            if not alive:
                return
            for thread in alive:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
                if deadline is not None and time.monotonic() >= deadline and thread.is_alive():
                    raise TimeoutError(
                        f"task threads still running after {timeout}s: {[t.name for t in alive]}"
                    )
