"""The trigger manager: fires triggers, creates and schedules instances,
replays and skips failed ones. Every operation is one locked transaction on
the session, so concurrent fires from any number of processes neither lose
a trigger nor schedule an instance twice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from . import conf, engine, inspection, timer_ops
from .config import validate_configuration
from .dispatch import CurrentDefaultRunner, dispatch, runner_choice
from .exceptions import (
    InvalidTriggerError,
)
from .integrity import check_before_fire, check_first_instances
from .registry import task_runners, trigger_managers
from .runners.base import BaseTaskRunner, runner_key
from .storages.base import MAX_INSTANCE_NAME_LENGTH, BaseTriggerStorage
from .storages.transaction import Transaction, run_atomically
from .types import TaskConfig, TaskInstance
from .validation import check_name, normalise_kwargs
from .worker import WorkerProtocol

__all__ = ["TriggerManager", "trigger_managers"]

logger = logging.getLogger(__name__)


def _log_condition_errors(uid: str, errors: list[tuple[str, str, str]]) -> None:
    for task, trigger, reason in errors:
        logger.warning(
            "session %r: the condition of task %r on trigger %r could not be evaluated (%s); "
            "the fire does not count for the task",
            uid,
            task,
            trigger,
            reason,
        )


R = TypeVar("R")


def _name_of(instance: TaskInstance | str) -> str:
    if isinstance(instance, TaskInstance):
        return instance.name
    return check_name(instance, "task instance name", max_length=MAX_INSTANCE_NAME_LENGTH)


class TriggerManager:
    """Fires triggers for one session and keeps its instances moving."""

    #: Registry key (``triggers.managers`` entry point name).
    name = "default"
    #: Runner for tasks whose configuration has no ``using``; unless a
    #: subclass or instance sets it, the current default (see
    #: :func:`~triggers.runners.base.default_runner`).
    default_task_runner_name: Any = CurrentDefaultRunner()

    #: The worker protocol runs of this manager's instances go through.
    worker_class: type[WorkerProtocol] = WorkerProtocol

    def __init__(self, storage: BaseTriggerStorage) -> None:
        self.storage = storage

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.storage!r}>"

    # -- hooks ---------------------------------------------------------------
    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        """Called after a fire (cascades included) was written and unlocked."""

    def _post_replay(self, task_instance: TaskInstance) -> None:
        """Called with the new clone after a failed instance was replayed."""

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        """Called after a failed instance was skipped (and its cascade fired)."""

    # -- plumbing ------------------------------------------------------------
    def atomic(self, operation: Callable[[Transaction], R]) -> R:
        """Run ``operation`` in one locked transaction on the session; start
        again if the lock expired before the write (which wrote nothing)."""
        return run_atomically(self.storage, operation)

    def _runner_key(self, config: TaskConfig) -> str:
        return runner_key(runner_choice(self, config))

    def get_runner(self, config: TaskConfig) -> Any:
        """The runner an instance of ``config`` is handed to."""
        choice = runner_choice(self, config)
        return choice() if isinstance(choice, type) else task_runners.get(choice)

    # -- configuration -------------------------------------------------------
    def update_configuration(self, configuration: Mapping[str, Any]) -> None:
        """Add or replace tasks (``{task name: directives}``).

        Raises :class:`~triggers.exceptions.ConfigurationError` naming the task
        and directive, and stores nothing, if any task is invalid. Triggers
        fired earlier are not re-applied to the new tasks.
        """
        configs = validate_configuration(configuration)
        for name, config in configs.items():
            # The same lookup (and error) as manage.py check and dispatch.
            BaseTaskRunner.resolve(config.run, name)

        def op(txn: Transaction) -> None:
            txn.fetch(everything=True)
            configs = validate_configuration(configuration, existing=txn.configs)
            txn.set_configs(configs)
            if configs:
                # Lets a fire notice later that the configuration vanished.
                txn.touch_meta(configured=True)

        self.atomic(op)

    # -- firing ----------------------------------------------------------------
    def fire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        delay: Any = None,
        at: Any = None,
        idempotency_key: str | None = None,
    ) -> list[TaskInstance]:
        """Fire a trigger for this session; returns the instances it scheduled.

        With ``delay`` (seconds or a timedelta) or ``at`` (an aware datetime)
        the fire is stored as a pending timer, applied once when due by
        :func:`triggers.timers.fire_due_timers`, and ``[]`` is returned. With
        ``idempotency_key``, a second fire with the same key in this session
        within ``TRIGGERS['IDEMPOTENCY_WINDOW']`` seconds changes nothing and
        returns ``[]``.

        Raises ``TypeError``/``ValueError`` (library subclasses) for a bad name,
        kwargs or option before touching the session, and
        :class:`~triggers.exceptions.DispatchError` if a ready instance could
        not be handed to its runner (the trigger is still recorded).
        """
        check_name(trigger_name, "trigger name")
        max_bytes, max_depth = conf.get_many("MAX_KWARGS_BYTES", "MAX_KWARGS_DEPTH")
        kwargs = normalise_kwargs(
            trigger_name, trigger_kwargs, max_bytes=max_bytes, max_depth=int(max_depth)
        )
        if delay is not None or at is not None or idempotency_key is not None:
            return timer_ops.fire_with_options(
                self,
                trigger_name,
                kwargs,
                delay=delay,
                at=at,
                idempotency_key=idempotency_key,
                manager_key=trigger_managers.key_for(type(self)),
            )

        def op(txn: Transaction) -> list[TaskInstance]:
            return self.fire_in(txn, trigger_name, kwargs)

        return self.atomic(op)

    def fire_in(
        self, txn: Transaction, trigger_name: str, kwargs: dict[str, Any]
    ) -> list[TaskInstance]:
        """Apply one fire (``kwargs`` already checked) inside ``txn``: the
        path every fire takes, delayed ones included."""
        txn.load(engine.load_for_fire(trigger_name))
        check_before_fire(self.storage, txn, trigger_name)
        return self.carry_out(
            txn, engine.apply_trigger(txn, trigger_name, kwargs), fired=trigger_name
        )

    def cancel_timers(self, trigger_name: str) -> int:
        """Remove this session's pending timers of ``trigger_name`` (delayed
        fires and deadlines that fire it); returns how many were removed."""
        return timer_ops.cancel_timers(self, trigger_name)

    def carry_out(
        self,
        txn: Transaction,
        effects: engine.Effects,
        fired: str | None = None,
        replayed: TaskInstance | None = None,
    ) -> list[TaskInstance]:
        """Take an engine operation's ``effects`` into ``txn``, dispatch the
        instances that became ready and queue the hooks (``_post_fire`` for
        the trigger ``fired``, ``_post_replay`` for the clone ``replayed``).
        Returns the instances scheduled."""
        txn.apply(effects)
        if effects.condition_errors:
            # After the commit, so a retried operation logs them once.
            errors, uid = list(effects.condition_errors), self.storage.uid
            txn.after_commit.append(lambda: _log_condition_errors(uid, errors))
        if effects.first_of:
            check_first_instances(self.storage, txn)
        scheduled = []
        for inst in effects.ready:
            if self._dispatch(txn, inst):
                scheduled.append(inst)
        if fired is not None and getattr(self._post_fire, "__func__", None) is not _NO_POST_FIRE:
            # (The hook as TriggerManager defines it does nothing: a fire
            # queues it only when a subclass or the instance replaced it.)
            txn.after_commit.append(lambda: self._post_fire(fired, scheduled))
        if replayed is not None:
            txn.after_commit.append(lambda: self._post_replay(replayed))
        return scheduled

    def _dispatch(self, txn: Transaction, inst: TaskInstance) -> bool:
        return dispatch(self, txn, inst)

    def resend_ready_instances(self) -> list[TaskInstance]:
        """Dispatch every instance that is ready but was never sent (e.g. the
        broker was down when it became ready)."""

        def op(txn: Transaction) -> list[TaskInstance]:
            txn.fetch(everything=True)
            ready = [i for i in txn.instances.values() if i.can_run]
            return [i for i in ready if self._dispatch(txn, i)]

        return self.atomic(op)

    def resend_instance(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Send an instance to its runner again: one that is ready but unsent,
        or one stuck in ``scheduled``/``running`` (its message or worker was
        lost). Duplicate deliveries are harmless: a worker runs an instance
        only while it holds the instance's claim."""
        name = _name_of(task_instance)

        def op(txn: Transaction) -> TaskInstance:
            inst = txn.get_instance(name)
            engine.check_resend(inst, txn.leases.get(name, 0))
            self._dispatch(txn, inst)
            return inst.copy()

        return self.atomic(op)

    # -- repairing failed instances -----------------------------------------
    def replay_failed_instance(
        self,
        failed_instance: TaskInstance | str,
        replacement_kwargs: Mapping[str, Any] | None = None,
    ) -> TaskInstance:
        """Mark a failed instance ``replayed`` and schedule a clone of it at
        once. ``replacement_kwargs`` replaces the clone's kwargs wholesale
        (``{}`` means none, ``None`` keeps them)."""
        name = _name_of(failed_instance)
        if replacement_kwargs is not None:
            replacement_kwargs = normalise_kwargs(name, replacement_kwargs)

        def op(txn: Transaction) -> TaskInstance:
            fx = engine.replay_failed(txn, txn.get_instance(name), replacement_kwargs)
            clone = fx.created[0]
            self.carry_out(txn, fx, replayed=clone)
            return clone

        return self.atomic(op)

    def skip_failed_instance(
        self,
        failed_instance: TaskInstance | str,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
    ) -> TaskInstance:
        """Mark a failed instance ``skipped``; with ``cascade=True`` fire the
        task's name with ``result`` as if it had finished."""
        name = _name_of(failed_instance)
        cascade_kwargs = normalise_kwargs(name, result) if cascade else {}

        def op(txn: Transaction) -> TaskInstance:
            txn.load(engine.load_for_finish(name) if cascade else engine.load_for_instance(name))
            inst = txn.get_instance(name)
            fx = engine.skip_failed(txn, inst, cascade, cascade_kwargs)
            self.carry_out(txn, fx, fired=inst.config.name if cascade else None)
            done = inst.copy()
            txn.after_commit.append(lambda: self._post_skip(done, cascade))
            return done

        return self.atomic(op)

    # -- direct updates --------------------------------------------------------
    def update_instance_status(
        self,
        task_instance: TaskInstance | str,
        status: str,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
    ) -> TaskInstance:
        """Set an instance's status (and merge ``metadata``); with
        ``cascade=True`` also fire its task's name with ``cascade_kwargs``."""
        name = _name_of(task_instance)
        if status not in TaskInstance.STATUSES:
            raise InvalidTriggerError(
                f"unknown status {status!r} for {name!r}; "
                f"expected one of {', '.join(TaskInstance.STATUSES)}"
            )
        kwargs = normalise_kwargs(name, cascade_kwargs) if cascade else {}
        extra = normalise_kwargs(name, metadata) if metadata else {}

        def op(txn: Transaction) -> TaskInstance:
            if cascade:
                txn.load(engine.load_for_finish(name))
            inst = txn.get_instance(name)
            inst.set_status(status)
            inst.metadata.update(extra)
            txn.save(inst)
            if cascade:
                fx = engine.apply_trigger(txn, inst.config.name, kwargs)
                self.carry_out(txn, fx, fired=inst.config.name)
            return inst.copy()

        return self.atomic(op)

    def update_instance_metadata(
        self, task_instance: TaskInstance | str, metadata: Mapping[str, Any]
    ) -> TaskInstance:
        """Merge ``metadata`` into an instance's metadata."""
        name = _name_of(task_instance)
        extra = normalise_kwargs(name, metadata)

        def op(txn: Transaction) -> TaskInstance:
            inst = txn.get_instance(name)
            inst.metadata.update(extra)
            inst.touch()
            txn.save(inst)
            return inst.copy()

        return self.atomic(op)

    def mark_instance_logs_resolved(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Record that someone has dealt with what this instance logged."""
        return self.update_instance_metadata(task_instance, {"logs_resolved": True})

    # -- worker side -----------------------------------------------------------
    @property
    def worker(self) -> WorkerProtocol:
        """The steps a runner takes with an instance of this session."""
        return self.worker_class(self)

    # -- inspection helpers -------------------------------------------------
    def find_stuck_instances(self, older_than: float | None = None) -> list[TaskInstance]:
        """Instances that stopped moving: ``scheduled`` or ``running`` for more
        than ``older_than`` seconds (default ``TRIGGERS['STUCK_AFTER']``), or
        ready but never sent (a failed dispatch) for that long.

        A ``running`` instance whose worker still renews its lease is busy,
        not stuck, and is left out. Each one can be re-sent with
        :meth:`resend_instance`.
        """
        return inspection.find_stuck(self.storage, older_than)

    def waiting_on(self) -> dict[str, list[str]]:
        """For every unstarted instance, the ``after`` triggers it still needs."""
        return inspection.waiting_by_instance(self.storage.instances.values())


#: The hook a fire need not queue (see ``carry_out``).
_NO_POST_FIRE = TriggerManager._post_fire
