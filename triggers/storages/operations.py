"""Running an operation on a session (:func:`run_atomically`: a transaction,
started again when its lock expired before the write) and what the
coordinator asks of a storage beside ``fetch``/``commit``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .. import conf
from ..exceptions import LockLostError, SessionTimeoutError, WriteConflictError
from .data import FetchRequest

if TYPE_CHECKING:
    from .base import BaseTriggerStorage
    from .transaction import Transaction

# -- what the coordinator asks of a storage beside fetch/commit -----------------
# The storage keeps these as underscore attributes today; reading them here,
# at the seam, keeps every other module off them until base.py names them.


def current_transaction(storage: BaseTriggerStorage) -> Transaction | None:
    """The transaction this thread has open on ``storage``, if any."""
    return storage._current


def has_seen_state(storage: BaseTriggerStorage) -> bool:
    """Whether this storage object saw the session hold state before."""
    return storage._seen_state


def forget_seen_state(storage: BaseTriggerStorage) -> None:
    """Start a vanished session over (``ON_LOST_SESSION = 'restart'``)."""
    storage._seen_state = False


def checked_parts(storage: BaseTriggerStorage) -> tuple[frozenset[str], bool]:
    """The parts ``existing_parts()`` reports on and whether every fetch
    already reports them (no extra round trip to look)."""
    return frozenset(getattr(storage, "_parts", ())), bool(
        getattr(storage, "_parts_in_fetch", False)
    )


def parts_in_fetch(storage: BaseTriggerStorage) -> bool:
    """Whether every fetch already reports the parts (the second half of
    :func:`checked_parts`, without building the first: a fire asks this)."""
    return bool(getattr(storage, "_parts_in_fetch", False))


def existing_parts(storage: BaseTriggerStorage) -> set[str] | None:
    """The parts of the session that exist (``None``: the backend cannot tell)."""
    return storage.existing_parts()


def renew_lease(storage: BaseTriggerStorage, name: str, token: str, ms: int) -> bool:
    """Extend a worker's lease on a running instance if ``token`` still holds it."""
    return storage.renew_lease(name, token, ms)


def leases_left(storage: BaseTriggerStorage, names: list[str]) -> dict[str, int]:
    """Milliseconds each named instance's worker lease has left (absent: none)."""
    return storage.fetch(FetchRequest(instances=tuple(names))).leases


# -- running an operation -----------------------------------------------------------

R = TypeVar("R")
#: How often an operation is retried from scratch when its lock expired
#: before it could write (nothing was written by the failed attempt).
LOCK_LOST_RETRIES = 3
_logger = logging.getLogger("triggers.manager")


def run_atomically(storage: BaseTriggerStorage, operation: Callable[[Transaction], R]) -> R:
    """Run ``operation`` in a transaction on ``storage`` (joining the one this
    thread has open, if any); start again if the lock expired before the
    write (the failed attempt wrote nothing), at most ``LOCK_LOST_RETRIES``
    times. A document-tier write conflict is that tier's way of waiting for
    the session, so it is retried for as long as ``TRIGGERS['LOCK_TIMEOUT']``
    allows, like a wait for the lock."""
    deadline: float | None = None  # set at the first conflict: no settings read per fire
    lost = 0
    while True:
        try:
            with storage.transaction() as txn:
                return operation(txn)
        except SessionTimeoutError as exc:
            if current_transaction(storage) is None:  # the outermost operation says it once
                _logger.error(
                    "%s (in %s)",
                    exc,
                    getattr(operation, "__qualname__", "a session operation"),
                    extra={"triggers_session": storage.uid},
                )
            raise
        except WriteConflictError:
            if current_transaction(storage) is not None:
                raise
            if deadline is None:
                deadline = time.monotonic() + float(conf.get("LOCK_TIMEOUT"))
            elif time.monotonic() >= deadline:
                raise
            _logger.debug("session %r changed under a document-tier write; retrying", storage.uid)
        except LockLostError:
            lost += 1
            if lost >= LOCK_LOST_RETRIES or current_transaction(storage) is not None:
                raise
            _logger.warning("lock on session %r expired mid-operation; retrying", storage.uid)
