"""The data that crosses the storage contract: what a fetch asks for
(:class:`FetchRequest`), what it read (:class:`Snapshot`) and what a commit
writes (:class:`Changes`). Plain values, no I/O; the transaction and every
backend import them from here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .. import conf
from ..effects import instance_sort_key
from ..exceptions import ConfigurationError
from ..types import TaskConfig, TaskInstance

__all__ = [
    "Changes",
    "FetchRequest",
    "Snapshot",
    "UNLESS",
    "WaitKey",
    "apply_changes",
    "build_index",
    "full_snapshot",
    "instance_sort_key",
    "max_idempotency_keys",
]

#: ``(task name, trigger name)``: the instances of a task still waiting on a trigger.
WaitKey = tuple[str, str]
#: Marks an ``unless`` trigger among the kwargs an instance received
#: (:attr:`Changes.received`): ``UNLESS + name`` (names hold no control
#: characters, so it cannot clash with an ``after`` trigger's name).
UNLESS = "\x1f"


def build_index(configs: dict[str, TaskConfig]) -> dict[str, list[str]]:
    """trigger name -> names of the tasks whose ``after``/``unless`` mention it."""
    index: dict[str, list[str]] = defaultdict(list)
    for name in sorted(configs):
        for trigger in configs[name].triggers:
            index[trigger].append(name)
    return dict(index)


@dataclass(frozen=True, init=False)
class FetchRequest:
    """What one operation needs loaded: the tasks that mention ``triggers``
    (with the instances waiting on them and whether each trigger fired), the
    named ``instances`` and ``tasks``, the session metadata and counters --
    or, with ``everything``, the whole session.

    (Its ``__init__`` is written out, as :class:`~triggers.effects.Load`'s:
    every fetch makes one, and the generated code of a frozen class calls
    ``object.__setattr__`` per field where a store into the instance's
    dictionary does.)"""

    triggers: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    everything: bool = False
    #: Triggers whose latest kwargs to read besides (a new instance is
    #: seeded with them; a backend may also read them on its own when it
    #: sees a fire will create an instance, to save the round trip).
    kwargs: tuple[str, ...] = ()
    #: Whether this idempotency key was recorded and has not expired
    #: (:attr:`Snapshot.idempotency_seen`).
    idempotency_key: str | None = None
    #: Load the session's pending timers (:attr:`Snapshot.timers`).
    timers: bool = False

    def __init__(
        self,
        triggers: tuple[str, ...] = (),
        instances: tuple[str, ...] = (),
        tasks: tuple[str, ...] = (),
        everything: bool = False,
        kwargs: tuple[str, ...] = (),
        idempotency_key: str | None = None,
        timers: bool = False,
    ) -> None:
        values = self.__dict__
        values["triggers"] = triggers
        values["instances"] = instances
        values["tasks"] = tasks
        values["everything"] = everything
        values["kwargs"] = kwargs
        values["idempotency_key"] = idempotency_key
        values["timers"] = timers


#: Marks a collection argument of :class:`Snapshot` and :class:`Changes`
#: that was not given (each then starts empty).
_NEW: Any = object()


@dataclass(init=False)
class Snapshot:
    """What one fetch read from the backend.

    (Its ``__init__`` is written out: every fetch makes one, and a literal
    per empty collection costs less than the generated code's call of each
    field's factory.)"""

    meta: dict[str, Any] | None = None
    index: dict[str, list[str]] = field(default_factory=dict)
    configs: dict[str, TaskConfig] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    waiting: dict[WaitKey, list[str]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Triggers whose fired/not-fired state this snapshot knows.
    kwargs_known: set[str] = field(default_factory=set)
    #: instance name -> milliseconds its worker lease has left (absent: none).
    leases: dict[str, int] = field(default_factory=dict)
    everything: bool = False
    #: The requested idempotency key was recorded and has not expired.
    idempotency_seen: bool = False
    #: timer id -> ``{"trigger", "due" (ISO-8601 UTC), "kwargs", optional
    #: "instance"}``: filled when requested or with ``everything``.
    timers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __init__(
        self,
        meta: dict[str, Any] | None = None,
        index: dict[str, list[str]] = _NEW,
        configs: dict[str, TaskConfig] = _NEW,
        counters: dict[str, int] = _NEW,
        waiting: dict[WaitKey, list[str]] = _NEW,
        records: dict[str, dict[str, Any]] = _NEW,
        latest_kwargs: dict[str, Any] = _NEW,
        kwargs_known: set[str] = _NEW,
        leases: dict[str, int] = _NEW,
        everything: bool = False,
        idempotency_seen: bool = False,
        timers: dict[str, dict[str, Any]] = _NEW,
    ) -> None:
        self.meta = meta
        self.index = {} if index is _NEW else index
        self.configs = {} if configs is _NEW else configs
        self.counters = {} if counters is _NEW else counters
        self.waiting = {} if waiting is _NEW else waiting
        self.records = {} if records is _NEW else records
        self.latest_kwargs = {} if latest_kwargs is _NEW else latest_kwargs
        self.kwargs_known = set() if kwargs_known is _NEW else kwargs_known
        self.leases = {} if leases is _NEW else leases
        self.everything = everything
        self.idempotency_seen = idempotency_seen
        self.timers = {} if timers is _NEW else timers


@dataclass(init=False)
class Changes:
    """Everything one transaction writes (its ``__init__`` written out, as
    :class:`Snapshot`'s: every transaction makes one)."""

    configs: dict[str, TaskConfig] = field(default_factory=dict)
    #: The whole trigger index, rebuilt (``None``: unchanged).
    index: dict[str, list[str]] | None = None
    instances: dict[str, TaskInstance] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    latest_kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``(task, trigger, instance)`` entries to add to / remove from the
    #: waiting index (an indexed backend's; a document holds no index).
    waiting_add: set[tuple[str, str, str]] = field(default_factory=set)
    waiting_remove: set[tuple[str, str, str]] = field(default_factory=set)
    meta: dict[str, Any] | None = None
    #: instance name -> ``(worker token, lease milliseconds)``.
    leases_set: dict[str, tuple[str, int]] = field(default_factory=dict)
    leases_drop: set[str] = field(default_factory=set)
    #: What instances received, for a backend that keeps it apart from the
    #: instance record (``inst.to_record(kwargs=False)``): instance name ->
    #: ``{trigger: kwargs}`` to set (``UNLESS + trigger`` for ``unless``),
    #: and the names to drop. A backend that stores whole records
    #: (``to_record()``) ignores both.
    received: dict[str, dict[str, Any]] = field(default_factory=dict)
    received_drop: dict[str, set[str]] = field(default_factory=dict)
    #: ``(key, expiry as Unix time)``: record an idempotency key atomically
    #: with the rest (dropping the session's expired keys while at it).
    idempotency: tuple[str, float] | None = None
    #: timer id -> timer (see :attr:`Snapshot.timers`) to add; ids to remove.
    timers_add: dict[str, dict[str, Any]] = field(default_factory=dict)
    timers_remove: set[str] = field(default_factory=set)

    def __init__(
        self,
        configs: dict[str, TaskConfig] = _NEW,
        index: dict[str, list[str]] | None = None,
        instances: dict[str, TaskInstance] = _NEW,
        counters: dict[str, int] = _NEW,
        latest_kwargs: dict[str, Any] = _NEW,
        waiting_add: set[tuple[str, str, str]] = _NEW,
        waiting_remove: set[tuple[str, str, str]] = _NEW,
        meta: dict[str, Any] | None = None,
        leases_set: dict[str, tuple[str, int]] = _NEW,
        leases_drop: set[str] = _NEW,
        received: dict[str, dict[str, Any]] = _NEW,
        received_drop: dict[str, set[str]] = _NEW,
        idempotency: tuple[str, float] | None = None,
        timers_add: dict[str, dict[str, Any]] = _NEW,
        timers_remove: set[str] = _NEW,
    ) -> None:
        self.configs = {} if configs is _NEW else configs
        self.index = index
        self.instances = {} if instances is _NEW else instances
        self.counters = {} if counters is _NEW else counters
        self.latest_kwargs = {} if latest_kwargs is _NEW else latest_kwargs
        self.waiting_add = set() if waiting_add is _NEW else waiting_add
        self.waiting_remove = set() if waiting_remove is _NEW else waiting_remove
        self.meta = meta
        self.leases_set = {} if leases_set is _NEW else leases_set
        self.leases_drop = set() if leases_drop is _NEW else leases_drop
        self.received = {} if received is _NEW else received
        self.received_drop = {} if received_drop is _NEW else received_drop
        self.idempotency = idempotency
        self.timers_add = {} if timers_add is _NEW else timers_add
        self.timers_remove = set() if timers_remove is _NEW else timers_remove

    def __bool__(self) -> bool:
        return bool(
            self.configs
            or self.index is not None
            or self.instances
            or self.counters
            or self.latest_kwargs
            or self.waiting_add
            or self.waiting_remove
            or self.meta is not None
            or self.leases_set
            or self.leases_drop
            or self.received
            or self.received_drop
            or self.idempotency is not None
            or self.timers_add
            or self.timers_remove
        )


#: Keys of a whole session's metadata that hold state, not user metadata.
STATE_METAS = ("latest_kwargs", "counters", "leases", "timers", "idempotency")


def full_snapshot(
    configs: dict[str, TaskConfig],
    insts: dict[str, TaskInstance],
    metas: dict[str, Any],
    request: FetchRequest | None = None,
) -> Snapshot:
    """The snapshot of a whole session held as ``(configs, instances,
    metadata)`` -- the shape a document-tier backend stores (timers under
    ``metadata['timers']``, idempotency keys and their expiry under
    ``metadata['idempotency']``)."""
    waiting: dict[WaitKey, list[str]] = {}
    for name, inst in insts.items():
        for trig in inst.waiting_on():
            waiting.setdefault((inst.config.name, trig), []).append(name)
    counters = dict(metas.get("counters") or {})
    for name in insts:
        task, _, number = name.rpartition("#")
        if number.isdigit():
            counters[task] = max(counters.get(task, 0), int(number) + 1)
    now = time.time()
    leases = {
        n: int((info["expires"] - now) * 1000)
        for n, info in (metas.get("leases") or {}).items()
        if info["expires"] > now
    }
    latest = dict(metas.get("latest_kwargs") or {})
    meta = {k: v for k, v in metas.items() if k not in STATE_METAS}
    key = request.idempotency_key if request is not None else None
    seen = key is not None and (metas.get("idempotency") or {}).get(key, 0) > time.time()
    return Snapshot(
        idempotency_seen=seen,
        timers={t: dict(v) for t, v in (metas.get("timers") or {}).items()},
        meta=meta or None,
        index=build_index(configs),
        configs=dict(configs),
        counters=counters,
        waiting=waiting,
        records={n: i.to_record() for n, i in insts.items()},
        latest_kwargs=latest,
        kwargs_known=set(latest),
        leases=leases,
        everything=True,
    )


def apply_changes(
    configs: dict[str, TaskConfig],
    insts: dict[str, TaskInstance],
    metas: dict[str, Any],
    changes: Changes,
) -> None:
    """Apply ``changes`` to a whole session held as ``(configs, instances,
    metadata)``, in place (the waiting index needs no writing: it is rebuilt
    from the instances on every read)."""
    configs.update(changes.configs)
    insts.update(changes.instances)
    if changes.meta is not None:
        metas.update(changes.meta)
    metas.setdefault("latest_kwargs", {}).update(changes.latest_kwargs)
    metas.setdefault("counters", {}).update(changes.counters)
    leases = metas.setdefault("leases", {})
    for name, (token, ms) in changes.leases_set.items():
        leases[name] = {"token": token, "expires": time.time() + ms / 1000}
    for name in changes.leases_drop:
        leases.pop(name, None)
    if changes.timers_add or changes.timers_remove:
        timers = metas.setdefault("timers", {})
        timers.update(changes.timers_add)
        for timer in changes.timers_remove:
            timers.pop(timer, None)
    if changes.idempotency is not None:
        now = time.time()
        keys = {k: t for k, t in (metas.get("idempotency") or {}).items() if t > now}
        keys[changes.idempotency[0]] = changes.idempotency[1]
        cap = max_idempotency_keys()
        if len(keys) > cap:
            keys = dict(sorted(keys.items(), key=lambda item: item[1])[-cap:])
        metas["idempotency"] = keys


def max_idempotency_keys() -> int:
    """``TRIGGERS['IDEMPOTENCY_MAX_KEYS']``: the most idempotency keys a
    session keeps. Recording one more drops those that expire first (the
    oldest, for a constant window) besides the expired ones; every backend
    applies it in the commit that records the key."""
    value = conf.get("IDEMPOTENCY_MAX_KEYS")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"TRIGGERS['IDEMPOTENCY_MAX_KEYS'] must be a positive integer, not {value!r}"
        )
    return value
