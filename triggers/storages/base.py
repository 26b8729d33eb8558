"""The storage base classes: the session API every backend offers, on the
indexed tier's methods (:class:`IndexedStorage`: ``fetch``, ``commit``,
``make_lock``, ``renew_lease``, ``delete``, ``existing_parts``), which a
transaction calls. :class:`~triggers.storages.document.DocumentStorage`
builds them on ``read``/``write``; :class:`BaseTriggerStorage`'s defaults
build them on the original's two primitives, ``_load_from_backend`` and
``_save`` (process-local). See "Writing a storage backend" in the docs.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from .. import conf
from ..exceptions import DispatchError, NotLockedError
from ..types import TaskConfig, TaskInstance
from ..validation import check_uid
from .data import Changes, FetchRequest, Snapshot, apply_changes, full_snapshot
from .session_api import MAX_INSTANCE_NAME_LENGTH, SessionAPI
from .transaction import Transaction

_logger = logging.getLogger("triggers.manager")

__all__ = ["MAX_INSTANCE_NAME_LENGTH", "BaseTriggerStorage", "IndexedStorage"]


def config_from_stored(name: str, data: Mapping[str, Any]) -> TaskConfig:
    """Rebuild a config this library wrote (already validated)."""
    known = {"after", "run", "andEvery", "unless", "withParams", "using", "if"}
    return TaskConfig(
        name=name,
        after=data.get("after", ()),
        run=data["run"],
        and_every=data.get("andEvery"),
        unless=data.get("unless"),
        with_params=data.get("withParams"),
        using=data.get("using"),
        extras={k: v for k, v in data.items() if k not in known},
        conditions=data.get("if"),
    )


class _ThreadState(threading.local):
    """A storage object's state in each thread. What a thread has not set
    reads as ``None`` from the class: ``threading.local`` raises (and
    ``getattr`` then swallows) an AttributeError for it otherwise, a cost
    the first look of every operation paid."""

    #: The transaction this thread has open on the storage.
    txn: Transaction | None = None
    #: What the backend noted of the current operation's fetch (the Redis
    #: backend: the parts it found).
    parts: Any = None


class BaseTriggerStorage(SessionAPI):
    """Loads, saves and locks one session's state (``tasks``, ``instances``,
    ``metadata``).

    Reads outside an operation always go to the backend, so an object kept
    across requests or used after tasks ran never shows stale state.
    """

    #: Registry key (``triggers.storages`` entry point name).
    name: str = ""
    #: The parts :meth:`existing_parts` reports on (a store that keeps a
    #: session's parts apart and can lose one), and whether every fetch
    #: reports them too, so checking costs no round trip.
    parts: tuple[str, ...] = ()
    parts_in_fetch: bool = False

    def __init__(self, uid: str) -> None:
        self.uid = check_uid(uid)
        self._configs: dict[str, TaskConfig] = {}
        self._instances: dict[str, TaskInstance] = {}
        self._metas: dict[str, Any] = {}
        self._local = _ThreadState()
        #: Set once this object has seen the session hold state, so a session
        #: that vanishes afterwards is noticed (see ``ON_LOST_SESSION``).
        self.seen_state = False

    # -- the indexed tier: what a transaction calls ---------------------------
    # Public and documented (docs/storages.rst). The defaults run the
    # original's two primitives below, whose lock is process-local.

    def fetch(self, request: FetchRequest) -> Snapshot:
        """Load what ``request`` asks for (more is allowed; the default loads
        the whole session through ``_load_from_backend()``). Inside a
        transaction, the first fetch takes the lock if :meth:`make_lock`
        returned one that is taken lazily."""
        configs, insts, metas = self._loaded_state()
        self._configs, self._instances, self._metas = configs, insts, metas
        return full_snapshot(configs, insts, metas, request)

    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        """Write ``changes`` in one step if ``lock`` is still held (raise
        :class:`~triggers.exceptions.LockLostError`, writing nothing, if
        not), then release ``lock`` if asked. The default applies them to
        the state the last fetch loaded and calls ``_save()``."""
        try:
            if changes:
                apply_changes(self._configs, self._instances, self._metas, changes)
                self._save()
        finally:
            if release:
                lock.release()

    def make_lock(self) -> Any:
        """A new lock on this session: an object with
        ``acquire_within(seconds)`` and ``release()``. The default is
        process-local, safe only while one process writes the session."""
        from ..locking import LocalLock

        return LocalLock(f"{type(self).__name__}:{self.uid}", self.uid)

    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        """Extend a worker's lease on a running instance by ``ms`` if it is
        still ``token``'s; ``False`` if it is not (or expired)."""
        with self.transaction() as txn:
            txn.fetch(everything=True)
            info = (self._metas.get("leases") or {}).get(name)
            if not info or info.get("token") != token:
                return False
            txn.set_lease(name, token, ms)
            return True

    def existing_parts(self) -> set[str] | None:
        """Which parts of the session's state exist (``'config'``, ``'index'``,
        ``'instances'``, ``'counters'``, ``'kwargs'``), for backends that keep
        them apart and can lose one; ``None`` if the backend cannot tell."""
        return None

    def get_init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this backend in another process."""
        return {}

    # -- the original's two primitives (process-local; see docs/migrating) ---
    def _load_from_backend(
        self,
    ) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
        """Return ``(configs, instances, metadata)`` as stored: either the
        plain data ``_serialize()`` produced (task directives and instance
        records) or :class:`TaskConfig`/:class:`TaskInstance` objects."""
        raise NotImplementedError

    def _save(self) -> None:
        """Write ``self._configs``, ``self._instances`` and ``self._metas``
        (``self._serialize()`` gives them as plain JSON-ready data)."""
        raise NotImplementedError

    # -- (de)serialisation helpers -------------------------------------------
    def _serialize(self, data: Any = None) -> Any:
        """Plain JSON-ready data: the whole session when called without
        arguments, or the given configs/instances (a mapping or one object)."""
        if data is None:
            return {
                "tasks": self._serialize(self._configs),
                "instances": self._serialize(self._instances),
                "metadata": copy.deepcopy(self._metas),
            }
        if isinstance(data, TaskConfig):
            return data.to_directives()
        if isinstance(data, TaskInstance):
            return copy.deepcopy(data.to_record())
        if isinstance(data, Mapping):
            return {k: self._serialize(v) for k, v in data.items()}
        return copy.deepcopy(data)

    @staticmethod
    def _deserialize(
        data: Mapping[str, Any] | None,
    ) -> tuple[dict[str, TaskConfig], dict[str, TaskInstance], dict[str, Any]]:
        """Inverse of ``_serialize()``: ``(configs, instances, metadata)``."""
        data = data or {}
        configs = {n: config_from_stored(n, d) for n, d in (data.get("tasks") or {}).items()}
        instances = {
            n: TaskInstance.from_record(n, r, configs[r["task"]])
            for n, r in (data.get("instances") or {}).items()
            if r.get("task") in configs
        }
        return configs, instances, dict(data.get("metadata") or {})

    # -- fetch/commit: the generic implementation -------------------------------
    def _loaded_state(
        self,
    ) -> tuple[dict[str, TaskConfig], dict[str, TaskInstance], dict[str, Any]]:
        """``_load_from_backend()`` as objects this storage owns: plain stored
        data is rebuilt, objects are copied (a backend may keep them)."""
        raw_configs, raw_instances, raw_metas = self._load_from_backend()
        configs = {
            name: cfg if isinstance(cfg, TaskConfig) else config_from_stored(name, cfg)
            for name, cfg in (raw_configs or {}).items()
        }
        instances: dict[str, TaskInstance] = {}
        for name, inst in (raw_instances or {}).items():
            if isinstance(inst, TaskInstance):
                instances[name] = inst.copy()
                continue
            config = configs.get(inst.get("task") or name.rpartition("#")[0])
            if config is not None:
                instances[name] = TaskInstance.from_record(name, copy.deepcopy(inst), config)
        return configs, instances, copy.deepcopy(dict(raw_metas or {}))

    # -- transactions ---------------------------------------------------------
    @property
    def current_transaction(self) -> Transaction | None:
        """The transaction this thread has open on this storage, if any."""
        return self._local.txn

    # Underscore names the transaction module reads until it uses the
    # public ones above (then they go).
    _current = current_transaction

    @property
    def _seen_state(self) -> bool:
        return self.seen_state

    @_seen_state.setter
    def _seen_state(self, value: bool) -> None:
        self.seen_state = value

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Lock the session and yield a unit of work; its changes are written
        in one step when the outermost block exits without an exception.

        Nested blocks in the same thread join the open transaction.
        """
        return _TransactionBlock(self)

    @contextmanager
    def acquire_lock(self) -> Iterator[BaseTriggerStorage]:
        """Hold the session lock for a block and yield this storage, bound to
        the block: reads (``tasks``, ``instances``, ``storage[name]``...)
        return the objects of the block, ``create_instance``,
        ``clone_instance`` and manager calls join it, and edits to instances
        are kept by :meth:`save`. Everything is written in one step when the
        block exits, and nothing if it raises."""
        with self.transaction():
            yield self

    @property
    def lock(self) -> Any:
        """The session lock this thread holds (``None`` outside a block)."""
        txn = self.current_transaction
        return txn.lock if txn is not None else None

    def save(self) -> None:
        """Inside ``acquire_lock()``: keep the edits made to this block's
        instances (``inst.status = ...``, ``inst.metadata[...] = ...``); they
        are written when the block exits. Outside a block every call already
        writes, so there is nothing to save."""
        txn = self.current_transaction
        if txn is None:
            raise NotLockedError(
                f"save() on session {self.uid!r} outside 'with storage.acquire_lock()'; "
                "instances read outside a block are copies, and other calls write at once"
            )
        txn.save_edited()

    def _bound(self) -> Transaction | None:
        """This thread's open transaction, fully loaded, or ``None``."""
        txn = self.current_transaction
        if txn is not None:
            txn.fetch(everything=True)
        return txn

    # == session index and deletion (retention; see triggers.sessions) =======
    # Backends that can list their sessions implement the two classmethods;
    # every backend can delete a session. ``options`` are the storage's
    # constructor keywords besides the uid (``TRIGGERS['STORAGE_OPTIONS']``).
    # Times are aware UTC datetimes. Keeping the index current must cost a
    # fire nothing extra (update it in the write the fire makes anyway), and
    # a sharded store must update it idempotently outside a session's shard.

    @classmethod
    def list_sessions(
        cls,
        options: Mapping[str, Any],
        *,
        prefix: str = "",
        offset: int = 0,
        limit: int | None = None,
        older_than: datetime | None = None,
    ) -> list[tuple[str, datetime]]:
        """``(uid, last activity)`` of the stored sessions whose uid starts
        with ``prefix`` and, with ``older_than``, whose last write was before
        it: newest activity first, then ``offset`` and
        ``limit``."""
        raise NotImplementedError(f"{cls.__name__} keeps no index of its sessions")

    @classmethod
    def count_sessions(cls, options: Mapping[str, Any], *, prefix: str = "") -> int:
        """How many stored sessions have a uid starting with ``prefix``."""
        raise NotImplementedError(f"{cls.__name__} keeps no index of its sessions")

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        """Remove the whole session (configuration, instances, fired
        triggers, history) under its lock; ``True`` if there was one.

        With ``idle_before``, only if its last write was before that time,
        checked atomically with the deletion, so a cleanup never removes a
        session that was written after it looked. The default empties the
        session with ``_save()`` and cannot check ``idle_before``."""
        if idle_before is not None:
            raise NotImplementedError(f"{type(self).__name__} records no last activity")
        with self.transaction() as txn:
            txn.fetch(everything=True)
            had = bool(self._configs or self._instances or self._metas)
            if had:
                self._configs, self._instances, self._metas = {}, {}, {}
                self._save()
        return had

    # == end of session index ================================================

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid!r}>"


class IndexedStorage(BaseTriggerStorage):
    """The indexed tier: a backend that loads only what an operation needs
    and writes its changes in one step under a lock that holds across
    processes (the Redis and database backends). It implements
    :meth:`fetch`, :meth:`commit`, :meth:`make_lock`, :meth:`renew_lease`
    and :meth:`delete`; :meth:`existing_parts` and :meth:`get_init_kwargs`
    when it has something to say. See "Writing a storage backend"."""

    def fetch(self, request: FetchRequest) -> Snapshot:
        raise NotImplementedError

    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        raise NotImplementedError

    def make_lock(self) -> Any:
        raise NotImplementedError

    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        raise NotImplementedError

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        raise NotImplementedError


class _TransactionBlock:
    """What :meth:`BaseTriggerStorage.transaction` returns (a class rather
    than a generator: every operation enters one)."""

    __slots__ = ("joined", "lock", "storage", "txn")

    def __init__(self, storage: BaseTriggerStorage) -> None:
        self.storage = storage

    def __enter__(self) -> Transaction:
        storage = self.storage
        current = storage.current_transaction
        self.joined = current is not None
        if current is not None:
            self.txn = current
            return current
        self.lock = lock = storage.make_lock()
        lock.acquire_within(float(conf.get("LOCK_TIMEOUT")))
        self.txn = txn = Transaction(storage, lock)
        storage._local.txn = txn
        return txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.joined:
            return
        storage, txn, lock = self.storage, self.txn, self.lock
        committed = False
        try:
            if exc_type is None:
                changes = txn.build_changes()
                storage.commit(lock, changes, release=True)
                committed = True
        finally:
            storage._local.txn = None
            if not committed:
                try:
                    lock.release()
                except Exception:
                    # The lock may have expired meanwhile (another process may
                    # hold it now), or Redis went away: the error that ended the
                    # operation is the one raised, this one is logged.
                    _logger.warning(
                        "could not release the lock of session %r after a failed operation",
                        storage.uid,
                        exc_info=True,
                        extra={"triggers_session": storage.uid},
                    )
        if exc_type is not None:
            return
        if changes.timers_add or changes.timers_remove:
            # The cross-session due index lives outside the session (another
            # hash slot in a cluster), so it is updated after the commit.
            from .due_index import after_commit  # what triggers.timers re-exports

            after_commit(storage, changes)
        if txn.meta is not None:
            storage.seen_state = True
        for callback in txn.after_commit:
            callback()
        if txn.dispatch_failures:
            raise DispatchError(storage.uid, txn.dispatch_failures)
