"""The worker protocol: what a runner does with an instance it was handed.

A run claims the instance (taking a lease it renews while it runs), then
ends it exactly once: finished (storing the result and firing the task's
name, the cascade, in the same step), failed, skipped, or replayed into a
clone (a retry). Each step is one locked operation on the session whose
rule lives in :mod:`triggers.engine`; a step by a run that no longer owns
the instance (its lease expired and another worker took over) changes
nothing. :class:`~triggers.task.TriggerTask` drives these steps; any other
runner can drive them the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from . import engine
from .engine import Claim, Effects
from .storages.base import BaseTriggerStorage
from .storages.transaction import Transaction, renew_lease
from .types import TaskInstance

__all__ = ["Claim", "Coordinator", "WorkerProtocol"]

logger = logging.getLogger("triggers.manager")
R = TypeVar("R")


class Coordinator(Protocol):
    """What the worker protocol needs of a manager."""

    storage: BaseTriggerStorage

    def atomic(self, operation: Callable[[Transaction], R]) -> R:
        """Run ``operation`` in one locked session transaction."""
        ...

    def carry_out(
        self,
        txn: Transaction,
        effects: Effects,
        fired: str | None = None,
        replayed: TaskInstance | None = None,
    ) -> list[TaskInstance]:
        """Write ``effects`` with ``txn`` and dispatch what became ready."""
        ...


class WorkerProtocol:
    """The steps of one run of an instance, on ``manager``'s session."""

    def __init__(self, manager: Coordinator) -> None:
        self.manager = manager
        self.storage = manager.storage

    def claim(self, name: str, token: str, lease_ms: int) -> Claim:
        """Take ownership of ``name`` for the run holding ``token``, with a
        lease of ``lease_ms`` (see :class:`~triggers.engine.Claim`)."""

        def op(txn: Transaction) -> Claim:
            txn.load(engine.load_for_instance(name))
            inst = txn.instances.get(name)
            got, fx = engine.claim(
                inst, txn.meta is not None, txn.leases.get(name, 0), token, lease_ms
            )
            txn.apply(fx)
            return Claim(got.outcome, got.instance.copy(), got.wait_ms) if got.instance else got

        return self.manager.atomic(op)

    def fail_unstarted(self, name: str, metadata: Mapping[str, Any]) -> bool:
        """Mark a dispatched instance whose run could not start ``failed``
        (unless it moved on meanwhile, or a live worker holds it)."""

        def op(txn: Transaction) -> bool:
            txn.load(engine.load_for_instance(name))
            inst = txn.instances.get(name)
            if inst is None or not engine.may_fail_unstarted(inst, txn.leases.get(name, 0)):
                return False
            txn.apply(engine.end_run(inst, TaskInstance.STATUS_FAILED, metadata))
            return True

        return self.manager.atomic(op)

    def _owned(self, txn: Transaction, name: str, token: str) -> TaskInstance | None:
        inst = txn.get_instance(name)
        if not engine.owns(inst, token):
            logger.warning(
                "%s in session %r is no longer owned by this run (status %s); "
                "discarding its outcome",
                name,
                self.storage.uid,
                inst.status,
            )
            return None
        return inst

    def finish(
        self, name: str, token: str, result: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> bool:
        """Store the result and fire the cascade in one step (exactly once)."""

        def op(txn: Transaction) -> bool:
            txn.load(engine.load_for_finish(name))
            inst = self._owned(txn, name, token)
            if inst is None:
                return False
            fx = engine.finish(txn, inst, result, metadata)
            self.manager.carry_out(txn, fx, fired=inst.config.name)
            return True

        return self.manager.atomic(op)

    def end(self, name: str, token: str, status: str, metadata: Mapping[str, Any]) -> bool:
        """Record a run that ended ``failed`` or ``skipped`` (by itself)."""

        def op(txn: Transaction) -> bool:
            inst = self._owned(txn, name, token)
            if inst is None:
                return False
            txn.apply(engine.end_run(inst, status, metadata))
            return True

        return self.manager.atomic(op)

    def fail(self, name: str, token: str, metadata: Mapping[str, Any]) -> bool:
        """Record a failed run."""
        return self.end(name, token, TaskInstance.STATUS_FAILED, metadata)

    def skip(self, name: str, token: str, metadata: Mapping[str, Any]) -> bool:
        """Record a run that skipped itself."""
        return self.end(name, token, TaskInstance.STATUS_SKIPPED, metadata)

    def retry(
        self,
        name: str,
        token: str,
        metadata: Mapping[str, Any],
        replacement_kwargs: Mapping[str, Any] | None,
        cooldown: float | None,
    ) -> TaskInstance | None:
        """Mark the run ``replayed`` and schedule its clone after ``cooldown``."""

        def op(txn: Transaction) -> TaskInstance | None:
            inst = self._owned(txn, name, token)
            if inst is None:
                return None
            fx = engine.retry(txn, inst, metadata, replacement_kwargs, cooldown)
            clone = fx.created[0]
            self.manager.carry_out(txn, fx, replayed=clone)
            return clone

        return self.manager.atomic(op)

    def renew_lease(self, name: str, token: str, lease_ms: int) -> bool:
        """Extend the run's lease; ``False`` once another run owns the instance."""
        return renew_lease(self.storage, name, token, lease_ms)
