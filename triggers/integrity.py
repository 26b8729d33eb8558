"""Noticing a session whose state vanished, wholly or in part.

A fire into a session whose metadata, configuration, instances or counters
were lost (a Redis restart, an eviction) would silently start the workflow
over or number instances from #0 again; these checks refuse it with
:class:`~triggers.exceptions.SessionLostError` instead (or start over, if
``TRIGGERS['ON_LOST_SESSION'] = 'restart'``).
"""

from __future__ import annotations

import logging

from . import conf
from .exceptions import SessionLostError, SessionNotConfiguredError
from .storages.base import BaseTriggerStorage
from .storages.operations import parts_in_fetch
from .storages.transaction import (
    Transaction,
    checked_parts,
    existing_parts,
    forget_seen_state,
    has_seen_state,
)

__all__ = ["check_before_fire", "check_first_instances", "missing_parts"]

logger = logging.getLogger("triggers.manager")


def check_before_fire(storage: BaseTriggerStorage, txn: Transaction, trigger: str) -> None:
    """Refuse to fire into a session whose state vanished, wholly (noticed
    by a storage object that saw it before) or partly (noticed by any
    process: parts that only exist together are missing)."""
    if txn.meta is None and has_seen_state(storage):
        if conf.get("ON_LOST_SESSION") == "restart":
            logger.warning("session %r vanished from the cache; starting it over", storage.uid)
            forget_seen_state(storage)
            return
        raise SessionLostError(storage.uid)
    missing = _missing_state(storage, txn, trigger)
    if not missing and parts_in_fetch(storage):
        # The fetch already looked (no extra round trip): a part the
        # metadata says exists but is gone (e.g. evicted) changes what this
        # fire would do.
        missing = missing_parts(storage, txn)
    if missing:
        # Partial state cannot be started over from: always refuse.
        raise SessionLostError(storage.uid, missing)
    if not (txn.meta or {}).get("configured"):
        _unconfigured(storage, trigger)


def check_first_instances(storage: BaseTriggerStorage, txn: Transaction) -> None:
    """A first instance is numbered #0 and seeded from the recorded kwargs:
    both wrong if the counters or kwargs vanished, so make sure they did not."""
    missing = missing_parts(storage, txn)
    if missing:
        raise SessionLostError(storage.uid, missing)


def _unconfigured(storage: BaseTriggerStorage, trigger: str) -> None:
    """A fire into a session without configuration (``ON_UNCONFIGURED``)."""
    policy = conf.get("ON_UNCONFIGURED")
    if policy == "raise":
        raise SessionNotConfiguredError(storage.uid, trigger)
    if policy != "record":
        logger.warning(
            "trigger %r fired into session %r, which has no configuration: recorded, "
            "but nothing can run (a mistyped session uid, or state lost in a Redis "
            "restart?); TRIGGERS['ON_UNCONFIGURED'] = 'raise' refuses such fires",
            trigger,
            storage.uid,
            extra={"triggers_session": storage.uid, "triggers_trigger": trigger},
        )


def _missing_state(storage: BaseTriggerStorage, txn: Transaction, trigger: str) -> str | None:
    if txn.meta is None:
        parts = existing_parts(storage)
        return f"metadata (still there: {', '.join(sorted(parts))})" if parts else None
    tasks = txn.index.get(trigger, [])
    # (Loops rather than comprehensions: every fire runs them and they
    # nearly always find nothing.)
    configs, instances = txn.configs, txn.instances
    lost = []
    for task in tasks:
        if task not in configs:
            lost.append(task)
    if lost:
        return f"configuration of {', '.join(lost)}"
    gone: set[str] = set()
    for task in tasks:
        for name in txn.waiting_names(task, trigger):
            if name not in instances:
                gone.add(name)
    if gone:
        return f"instances {', '.join(sorted(gone))}"
    if not tasks and txn.meta.get("configured"):
        return missing_parts(storage, txn)
    return None


def missing_parts(storage: BaseTriggerStorage, txn: Transaction) -> str | None:
    """Which parts the session's metadata says it has are gone (asks the
    backend once per operation)."""
    if txn.parts_checked or not txn.meta:
        return None
    txn.parts_checked = True
    parts = existing_parts(storage)
    if parts is None:
        return None
    meta = txn.meta
    needed: list[str] = []
    if meta.get("configured"):
        needed += ("config", "index")
    if meta.get("has_instances"):
        needed += ("instances", "counters")
        if "waiting" not in parts and "waiting" in checked_parts(storage)[0]:
            # Reported missing only when it should exist (see fetch.lua).
            needed.append("waiting")
    if meta.get("fired"):
        needed.append("kwargs")
    missing = []
    for part in needed:
        if part not in parts:
            missing.append(part)
    return ", ".join(sorted(missing)) if missing else None
