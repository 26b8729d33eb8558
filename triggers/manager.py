"""The trigger manager: fires triggers, creates and schedules instances,
replays and skips failed ones. Every operation is one locked transaction on
the session, so concurrent fires from any number of processes neither lose
a trigger nor schedule an instance twice."""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import conf
from .exceptions import (
    InstanceStateError,
    InvalidTriggerError,
    LockLostError,
    SessionLostError,
    SessionNotConfiguredError,
    SessionTimeoutError,
)
from .registry import Registry
from .runners import task_runners
from .runners.base import BaseTaskRunner, default_runner, forced_runner, runner_key
from .storages.base import MAX_INSTANCE_NAME_LENGTH, BaseTriggerStorage
from .storages.transaction import Transaction
from .types import TaskConfig, TaskInstance, validate_configuration
from .validation import check_name, normalise_kwargs

__all__ = ["TriggerManager", "trigger_managers"]

logger = logging.getLogger(__name__)
R = TypeVar("R")

#: How often an operation is retried from scratch when its lock expired
#: before it could write (nothing was written by the failed attempt).
LOCK_LOST_RETRIES = 3


def _name_of(instance: TaskInstance | str) -> str:
    if isinstance(instance, TaskInstance):
        return instance.name
    return check_name(instance, "task instance name", max_length=MAX_INSTANCE_NAME_LENGTH)


class _CurrentDefaultRunner:
    """Reads as the key of the runner tasks without ``using`` get right now."""

    def __get__(self, obj: object, owner: type | None = None) -> str:
        return runner_key(default_runner())


class TriggerManager:
    """Fires triggers for one session and keeps its instances moving."""

    #: Registry key (``triggers.managers`` entry point name).
    name = "default"
    #: Runner for tasks whose configuration has no ``using``; unless a
    #: subclass or instance sets it, the current default (see
    #: :func:`~triggers.runners.base.default_runner`).
    default_task_runner_name: Any = _CurrentDefaultRunner()

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
    def _atomic(self, operation: Callable[[Transaction], R]) -> R:
        """Run ``operation`` in a session transaction; start again if the
        lock expired before the write (the failed attempt wrote nothing)."""
        for attempt in range(LOCK_LOST_RETRIES):
            try:
                with self.storage.transaction() as txn:
                    return operation(txn)
            except SessionTimeoutError as exc:
                if self.storage._current is None:  # the outermost operation says it once
                    logger.error(
                        "%s (in %s)",
                        exc,
                        getattr(operation, "__qualname__", "a session operation"),
                        extra={"triggers_session": self.storage.uid},
                    )
                raise
            except LockLostError:
                if attempt == LOCK_LOST_RETRIES - 1 or self.storage._current is not None:
                    raise
                logger.warning(
                    "lock on session %r expired mid-operation; retrying", self.storage.uid
                )
        raise AssertionError("unreachable")

    def _check_session(self, txn: Transaction, trigger: str) -> None:
        """Refuse to fire into a session whose state vanished, wholly (noticed
        by a storage object that saw it before) or partly (noticed by any
        process: parts that only exist together are missing)."""
        if txn.meta is None and self.storage._seen_state:
            if conf.get("ON_LOST_SESSION") == "restart":
                logger.warning(
                    "session %r vanished from the cache; starting it over", self.storage.uid
                )
                self.storage._seen_state = False
                return
            raise SessionLostError(self.storage.uid)
        missing = self._missing_state(txn, trigger)
        if not missing and getattr(self.storage, "_parts_in_fetch", False):
            # The fetch already looked (no extra round trip): a part the
            # metadata says exists but is gone (e.g. evicted) changes what
            # this fire would do.
            missing = self._missing_parts(txn)
        if missing:
            # Partial state cannot be started over from: always refuse.
            raise SessionLostError(self.storage.uid, missing)
        if not (txn.meta or {}).get("configured"):
            self._unconfigured(trigger)

    def _unconfigured(self, trigger: str) -> None:
        """A fire into a session without configuration (``ON_UNCONFIGURED``)."""
        policy = conf.get("ON_UNCONFIGURED")
        if policy == "raise":
            raise SessionNotConfiguredError(self.storage.uid, trigger)
        if policy != "record":
            logger.warning(
                "trigger %r fired into session %r, which has no configuration: recorded, "
                "but nothing can run (a mistyped session uid, or state lost in a Redis "
                "restart?); TRIGGERS['ON_UNCONFIGURED'] = 'raise' refuses such fires",
                trigger,
                self.storage.uid,
                extra={"triggers_session": self.storage.uid, "triggers_trigger": trigger},
            )

    def _missing_state(self, txn: Transaction, trigger: str) -> str | None:
        if txn.meta is None:
            parts = self.storage._existing_parts()
            return f"metadata (still there: {', '.join(sorted(parts))})" if parts else None
        tasks = txn.index.get(trigger, [])
        lost = [t for t in tasks if t not in txn.configs]
        if lost:
            return f"configuration of {', '.join(lost)}"
        waiting = {n for t in tasks for n in txn.waiting_names(t, trigger)}
        lost = sorted(waiting - set(txn.instances))
        if lost:
            return f"instances {', '.join(lost)}"
        if not tasks and txn.meta.get("configured"):
            return self._missing_parts(txn)
        return None

    def _missing_parts(self, txn: Transaction) -> str | None:
        """Which parts the session's metadata says it has are gone (asks the
        backend once per operation)."""
        if txn.parts_checked or not txn.meta:
            return None
        txn.parts_checked = True
        parts = self.storage._existing_parts()
        if parts is None:
            return None
        needed = set()
        if txn.meta.get("configured"):
            needed |= {"config", "index"}
        if txn.meta.get("has_instances"):
            needed |= {"instances", "counters"}
        if txn.meta.get("fired"):
            needed.add("kwargs")
        if txn.meta.get("has_instances") and "waiting" in getattr(self.storage, "_parts", ()):
            # Reported missing only when it should exist (see fetch.lua).
            needed.add("waiting")
        missing = sorted(needed - parts)
        return ", ".join(missing) if missing else None

    def _runner_choice(self, config: TaskConfig) -> str | type[BaseTaskRunner]:
        # ``using`` first, then the manager's own default, then the global one
        # (read now, so a reassigned DEFAULT_TASK_RUNNER counts).
        forced = forced_runner()
        if forced:
            return forced
        if config.using:
            return config.using
        own = inspect.getattr_static(self, "default_task_runner_name")
        if isinstance(own, _CurrentDefaultRunner):
            return default_runner()
        return self.default_task_runner_name

    def _runner_key(self, config: TaskConfig) -> str:
        return runner_key(self._runner_choice(config))

    def get_runner(self, config: TaskConfig) -> Any:
        choice = self._runner_choice(config)
        if isinstance(choice, type):
            return choice()
        return task_runners.get(choice)

    # -- configuration -------------------------------------------------------
    def update_configuration(self, configuration: Mapping[str, Any]) -> None:
        """Add or replace tasks (``{task name: directives}``).

        Raises :class:`~triggers.exceptions.ConfigurationError` naming the task
        and directive, and stores nothing, if any task is invalid. Triggers
        fired earlier are not re-applied to the new tasks.
        """

        from .runners.base import BaseTaskRunner as _Runner

        configs = validate_configuration(configuration)
        for name, config in configs.items():
            # The same lookup (and error) as manage.py check and dispatch.
            _Runner.resolve(config.run, name)

        def op(txn: Transaction) -> None:
            txn.fetch(everything=True)
            configs = validate_configuration(configuration, existing=txn.configs)
            txn.set_configs(configs)
            if configs:
                # Lets a fire notice later that the configuration vanished.
                txn.touch_meta(configured=True)

        self._atomic(op)

    # -- firing ----------------------------------------------------------------
    def fire(
        self, trigger_name: str, trigger_kwargs: Mapping[str, Any] | None = None
    ) -> list[TaskInstance]:
        """Fire a trigger for this session; returns the instances it scheduled.

        Raises ``TypeError``/``ValueError`` (library subclasses) for a bad name
        or kwargs before touching the session, and
        :class:`~triggers.exceptions.DispatchError` if a ready instance could
        not be handed to its runner (the trigger is still recorded).
        """
        check_name(trigger_name, "trigger name")
        kwargs = normalise_kwargs(
            trigger_name, trigger_kwargs, max_bytes=conf.get("MAX_KWARGS_BYTES")
        )

        def op(txn: Transaction) -> list[TaskInstance]:
            txn.fetch(triggers=[trigger_name])
            self._check_session(txn, trigger_name)
            return self._apply_trigger(txn, trigger_name, kwargs)

        return self._atomic(op)

    def _apply_trigger(
        self, txn: Transaction, trigger: str, kwargs: dict[str, Any]
    ) -> list[TaskInstance]:
        txn.fetch(triggers=[trigger])
        ready: list[TaskInstance] = []
        for config in txn.tasks_for(trigger):
            if not txn.has_instances(config.name):
                candidates = [self._new_seeded_instance(txn, config)]
            else:
                candidates = txn.waiting(config.name, trigger)
                if not candidates and trigger == config.and_every:
                    candidates = [self._new_seeded_instance(txn, config)]
            for inst in candidates:
                if trigger in config.after:
                    inst.kwargs[trigger] = copy.deepcopy(kwargs)
                if trigger in config.unless:
                    inst.abandon_state[trigger] = copy.deepcopy(kwargs)
                inst.touch()
                txn.save(inst)
                if inst.can_abandon:
                    inst.set_status(TaskInstance.STATUS_ABANDONED)
                elif inst.can_run:
                    ready.append(inst)
        txn.set_latest_kwargs(trigger, kwargs)
        scheduled = [inst for inst in ready if self._dispatch(txn, inst)]
        txn.after_commit.append(lambda: self._post_fire(trigger, scheduled))
        return scheduled

    def _new_seeded_instance(self, txn: Transaction, config: TaskConfig) -> TaskInstance:
        """A new instance that already holds the latest kwargs of every
        trigger of its task that fired earlier in this session."""
        if not txn.has_instances(config.name):
            # Numbered #0 and seeded from the recorded kwargs: both wrong if
            # the counters or kwargs vanished, so make sure they did not.
            missing = self._missing_parts(txn)
            if missing:
                raise SessionLostError(self.storage.uid, missing)
        return txn.new_instance(
            config,
            kwargs={t: copy.deepcopy(txn.latest_kwargs[t]) for t in config.after if txn.fired(t)},
            abandon_state={
                t: copy.deepcopy(txn.latest_kwargs[t]) for t in config.unless if txn.fired(t)
            },
        )

    def _dispatch(self, txn: Transaction, inst: TaskInstance) -> bool:
        """Hand a ready instance to its runner while the session is locked (a
        worker cannot claim it before this transaction is written), then
        mark it scheduled. On failure the instance stays ready and
        ``DispatchError`` is raised once the rest is written."""
        try:
            self.get_runner(inst.config).run(self, inst)
        except Exception as exc:
            logger.error(
                "could not dispatch %s in session %r: %s", inst.name, self.storage.uid, exc
            )
            inst.metadata["dispatch_error"] = f"{type(exc).__name__}: {exc}"
            txn.save(inst)
            txn.dispatch_failures[inst.name] = exc
            return False
        inst.metadata.pop("dispatch_error", None)
        inst.set_status(TaskInstance.STATUS_SCHEDULED)
        txn.save(inst)
        return True

    def resend_ready_instances(self) -> list[TaskInstance]:
        """Dispatch every instance that is ready but was never sent (e.g. the
        broker was down when it became ready)."""

        def op(txn: Transaction) -> list[TaskInstance]:
            txn.fetch(everything=True)
            ready = [i for i in txn.instances.values() if i.can_run]
            return [i for i in ready if self._dispatch(txn, i)]

        return self._atomic(op)

    def resend_instance(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Send an instance to its runner again: one that is ready but unsent,
        or one stuck in ``scheduled``/``running`` (its message or worker was
        lost). Duplicate deliveries are harmless: a worker runs an instance
        only while it holds the instance's claim."""
        name = _name_of(task_instance)

        def op(txn: Transaction) -> TaskInstance:
            inst = txn.get_instance(name)
            allowed = (TaskInstance.STATUS_SCHEDULED, TaskInstance.STATUS_RUNNING)
            if not (inst.can_run or inst.status in allowed):
                raise InstanceStateError(
                    name, inst.status, "only ready, scheduled or running instances can be re-sent"
                )
            if inst.status == TaskInstance.STATUS_RUNNING:
                left = txn.leases.get(name, 0)
                if left > 0:
                    # Its worker is alive and renewing its claim; a second
                    # run would only be thrown away.
                    raise InstanceStateError(
                        name, inst.status, f"its worker still holds it ({left / 1000:.1f}s left)"
                    )
                inst.metadata["resent_from_running"] = True
            self._dispatch(txn, inst)
            return inst.copy()

        return self._atomic(op)

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
            inst = self._resolve_failed(txn, name, TaskInstance.STATUS_REPLAYED)
            clone = self._clone(txn, inst, replacement_kwargs)
            self._dispatch(txn, clone)
            txn.after_commit.append(lambda: self._post_replay(clone))
            return clone

        return self._atomic(op)

    @staticmethod
    def _resolve_failed(txn: Transaction, name: str, status: str) -> TaskInstance:
        """Move a failed instance to ``status`` (replayed or skipped)."""
        inst = txn.get_instance(name)
        if inst.status != TaskInstance.STATUS_FAILED:
            raise InstanceStateError(name, inst.status, f"only failed instances can be {status}")
        inst.set_status(status)
        txn.save(inst)
        return inst

    def _clone(
        self,
        txn: Transaction,
        inst: TaskInstance,
        replacement_kwargs: Mapping[str, Any] | None,
        cooldown: float | None = None,
    ) -> TaskInstance:
        clone = txn.new_instance(
            inst.config,
            kwargs=copy.deepcopy(
                dict(replacement_kwargs) if replacement_kwargs is not None else inst.kwargs
            ),
            abandon_state=copy.deepcopy(inst.abandon_state),
        )
        clone.metadata["parent"] = inst.name
        clone.metadata["depth"] = int(inst.metadata.get("depth", 0)) + 1
        if cooldown:
            clone.metadata["cooldown"] = cooldown
        txn.save(clone)
        return clone

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
            inst = self._resolve_failed(txn, name, TaskInstance.STATUS_SKIPPED)
            if cascade:
                inst.metadata["result"] = cascade_kwargs
                self._apply_trigger(txn, inst.config.name, cascade_kwargs)
            done = inst.copy()
            txn.after_commit.append(lambda: self._post_skip(done, cascade))
            return done

        return self._atomic(op)

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
            inst = txn.get_instance(name)
            inst.set_status(status)
            inst.metadata.update(extra)
            txn.save(inst)
            if cascade:
                self._apply_trigger(txn, inst.config.name, kwargs)
            return inst.copy()

        return self._atomic(op)

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

        return self._atomic(op)

    def mark_instance_logs_resolved(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Record that someone has dealt with what this instance logged."""
        return self.update_instance_metadata(task_instance, {"logs_resolved": True})

    # -- worker side (used by TriggerTask) ---------------------------------
    def _claim(self, name: str, token: str, lease_ms: int) -> tuple[str, Any]:
        """Take ownership of an instance for one run.

        Returns ``('run', instance)``, ``('busy', ms)`` while another live
        worker owns it, ``('done', instance)`` if it already ended, or
        ``('skip', reason)`` if this message should be dropped.
        """

        def op(txn: Transaction) -> tuple[str, Any]:
            txn.fetch(instances=[name])
            inst = txn.instances.get(name)
            if inst is None:
                reason = "the session has vanished" if txn.meta is None else "no such instance"
                return "skip", reason
            if inst.status == TaskInstance.STATUS_RUNNING:
                left = txn.leases.get(name, 0)
                if left > 0:
                    return "busy", left
                inst.metadata["takeovers"] = int(inst.metadata.get("takeovers", 0)) + 1
            elif inst.status != TaskInstance.STATUS_SCHEDULED and not inst.can_run:
                if inst.is_resolved or inst.status == TaskInstance.STATUS_FAILED:
                    return "done", inst.copy()
                return "skip", f"instance is {inst.status}"
            inst.set_status(TaskInstance.STATUS_RUNNING)
            inst.token = token
            inst.metadata["attempts"] = int(inst.metadata.get("attempts", 0)) + 1
            txn.save(inst)
            txn.set_lease(name, token, lease_ms)
            return "run", inst.copy()

        return self._atomic(op)

    def _fail_unstarted(self, name: str, metadata: dict[str, Any]) -> bool:
        """Mark a dispatched instance whose run could not start ``failed``
        (unless it moved on meanwhile, or a live worker holds it)."""

        def op(txn: Transaction) -> bool:
            txn.fetch(instances=[name])
            inst = txn.instances.get(name)
            if inst is None or inst.is_resolved or inst.status == TaskInstance.STATUS_FAILED:
                return False
            if inst.status == TaskInstance.STATUS_RUNNING and txn.leases.get(name, 0) > 0:
                return False
            if inst.status == TaskInstance.STATUS_UNSTARTED and not inst.can_run:
                return False
            inst.metadata.update(metadata)
            inst.set_status(TaskInstance.STATUS_FAILED)
            inst.token = None
            txn.save(inst)
            txn.drop_lease(name)
            return True

        return self._atomic(op)

    def _owned(self, txn: Transaction, name: str, token: str) -> TaskInstance | None:
        inst = txn.get_instance(name)
        if inst.status != TaskInstance.STATUS_RUNNING or inst.token != token:
            logger.warning(
                "%s in session %r is no longer owned by this run (status %s); "
                "discarding its outcome",
                name,
                self.storage.uid,
                inst.status,
            )
            return None
        return inst

    def _finish(
        self, name: str, token: str, result: dict[str, Any], metadata: dict[str, Any]
    ) -> bool:
        """Store the result and fire the cascade in one step (exactly once)."""
        task_name = name.rpartition("#")[0]

        def op(txn: Transaction) -> bool:
            txn.fetch(instances=[name], triggers=[task_name])
            inst = self._owned(txn, name, token)
            if inst is None:
                return False
            inst.metadata.update(metadata)
            inst.metadata["result"] = result
            inst.set_status(TaskInstance.STATUS_FINISHED)
            inst.token = None
            txn.save(inst)
            txn.drop_lease(name)
            self._apply_trigger(txn, task_name, result)
            return True

        return self._atomic(op)

    def _end_run(self, name: str, token: str, status: str, metadata: dict[str, Any]) -> bool:
        """Record a failed or self-skipped run."""

        def op(txn: Transaction) -> bool:
            inst = self._owned(txn, name, token)
            if inst is None:
                return False
            inst.metadata.update(metadata)
            inst.set_status(status)
            inst.token = None
            txn.save(inst)
            txn.drop_lease(name)
            return True

        return self._atomic(op)

    def _retry_run(
        self,
        name: str,
        token: str,
        metadata: dict[str, Any],
        replacement_kwargs: Mapping[str, Any] | None,
        cooldown: float | None,
    ) -> TaskInstance | None:
        """Mark the run ``replayed`` and schedule its clone after ``cooldown``."""

        def op(txn: Transaction) -> TaskInstance | None:
            inst = self._owned(txn, name, token)
            if inst is None:
                return None
            inst.metadata.update(metadata)
            inst.set_status(TaskInstance.STATUS_REPLAYED)
            inst.token = None
            txn.save(inst)
            txn.drop_lease(name)
            clone = self._clone(txn, inst, replacement_kwargs, cooldown)
            self._dispatch(txn, clone)
            txn.after_commit.append(lambda: self._post_replay(clone))
            return clone

        return self._atomic(op)

    def _renew_lease(self, name: str, token: str, lease_ms: int) -> bool:
        return self.storage._renew_lease(name, token, lease_ms)

    # -- inspection helpers -------------------------------------------------
    def find_stuck_instances(self, older_than: float | None = None) -> list[TaskInstance]:
        """Instances that stopped moving: ``scheduled`` or ``running`` for more
        than ``older_than`` seconds (default ``TRIGGERS['STUCK_AFTER']``), or
        ready but never sent (a failed dispatch) for that long.

        A ``running`` instance whose worker still renews its lease is busy,
        not stuck, and is left out. Each one can be re-sent with
        :meth:`resend_instance`.
        """
        limit = float(conf.get("STUCK_AFTER") if older_than is None else older_than)
        now = datetime.now(UTC)
        found: list[TaskInstance] = []
        for inst in self.storage.instances.values():
            if inst.status in (TaskInstance.STATUS_SCHEDULED, TaskInstance.STATUS_RUNNING):
                stamp = inst.metadata.get("timestamps", {}).get(inst.status)
            elif inst.can_run:
                stamp = inst.metadata.get("timestamps", {}).get("last_modified")
            else:
                continue
            try:
                since = datetime.fromisoformat(stamp) if stamp else None
            except (TypeError, ValueError):
                since = None
            if since is None or (now - since).total_seconds() >= limit:
                found.append(inst)
        running = [i.name for i in found if i.status == TaskInstance.STATUS_RUNNING]
        if running:
            leases = self.storage._fetch(
                triggers=[], instances=running, tasks=[], everything=False
            ).leases
            found = [i for i in found if leases.get(i.name, 0) <= 0]
        return found

    def waiting_on(self) -> dict[str, list[str]]:
        """For every unstarted instance, the ``after`` triggers it still needs."""
        return {
            name: sorted(inst.missing_triggers)
            for name, inst in self.storage.instances.items()
            if inst.status == TaskInstance.STATUS_UNSTARTED
        }


trigger_managers: Registry[TriggerManager] = Registry(
    "triggers.managers", {"default": "triggers.manager.TriggerManager"}, base=TriggerManager
)
