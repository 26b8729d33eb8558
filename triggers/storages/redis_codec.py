"""The Redis backend's encoding: the key layout's constants, what fetch.lua
returns and a whole-session read read back as a
:class:`~triggers.storages.data.Snapshot`, and a
:class:`~triggers.storages.data.Changes` written as commit.lua's operations.
Plain values, no I/O (see :mod:`triggers.storages.redis` for the keys).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Any

from ..validation import compact_encoder
from .base import config_from_stored
from .data import UNLESS, Changes, FetchRequest, Snapshot, build_index, max_idempotency_keys

__all__ = [
    "FIRST_LEASE",
    "PARTS",
    "SEP",
    "SUFFIXES",
    "WAITING_FLAG",
    "decode_all",
    "decode_fetch",
    "dumps",
    "encode_request",
    "operations",
    "text",
]

SEP = "\x1f"
#: State keys a fire can check for (see ``existing_parts``), in fetch.lua's order.
PARTS = ("config", "index", "instances", "counters", "kwargs", "waiting")
#: The session's keys in the order the scripts take them (KEYS[1..12]).
SUFFIXES = (
    "config",
    "index",
    "instances",
    "waiting",
    "counters",
    "kwargs",
    "meta",
    "received",
    "timers",
    "idem",
    "values",
    "commits",
)
_CONFIG, _INDEX, _INSTANCES, _WAITING, _COUNTERS, _KWARGS, _META, _RECEIVED, _TIMERS = (
    str(k) for k in range(1, 10)
)
_VALUES = "11"
#: commit.lua's HSET operations, one per hash (``H`` and the key's number).
_H_CONFIG, _H_INDEX, _H_INSTANCES, _H_COUNTERS, _H_KWARGS, _H_RECEIVED, _H_TIMERS = (
    "H" + k for k in (_CONFIG, _INDEX, _INSTANCES, _COUNTERS, _KWARGS, _RECEIVED, _TIMERS)
)
#: Received kwargs longer than this (JSON) are stored once by digest in
#: ``:values`` and referenced as ``@<digest>``: an andEvery task's instances
#: all receive the same kwargs from the triggers that fired before them.
SHARED_VALUE_BYTES = 96
#: Where the lock keys and the lease keys start in a script's KEYS.
FIRST_LEASE = len(SUFFIXES) + 3
#: Field of the counters hash that says the waiting index should exist.
WAITING_FLAG = SEP + "w"


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


#: Compact JSON, raw UTF-8 (Lua's cjson passes it through untouched); one
#: encoder for the process (``json.dumps`` builds one per call).
dumps = compact_encoder(ensure_ascii=False, allow_nan=True)

_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(raw: str) -> Any:
    """``json.loads`` of a stored value, a third of its cost: the scanner
    itself (stored values are compact JSON); anything else, such as bytes,
    surrounding whitespace or a malformed value, goes to ``json.loads``."""
    try:
        value, end = _scan(raw, 0)
    except (StopIteration, TypeError):
        return json.loads(raw)
    return value if end == len(raw) else json.loads(raw)


@functools.lru_cache(maxsize=512)
def _config(name: str, raw: str) -> Any:
    """A stored config, parsed once per process and stored form (a wide
    task's directives are large; configs are never changed in place)."""
    return config_from_stored(name, json.loads(raw))


def _shared(value: str) -> str:
    """The ``:values`` field of a large received value (a 128-bit digest)."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def _merge_received(record: dict[str, Any], fields: Any, unless: str = UNLESS) -> None:
    """Put what a named instance received (``[trigger, kwargs JSON, ...]``,
    ``unless + trigger`` for ``unless``) into its record, making it whole."""
    kwargs: dict[str, Any] = {}
    abandon: dict[str, Any] = {}
    fields = fields or []
    for i in range(0, len(fields), 2):
        name = fields[i]
        if name.startswith(unless):
            abandon[name[len(unless) :]] = _loads(fields[i + 1])
        else:
            kwargs[name] = _loads(fields[i + 1])
    record["kwargs"] = kwargs
    record["abandon_state"] = abandon


#: What separates the request's lists (see fetch.lua).
_LISTS = "\x1e"
#: What marks an ``unless`` trigger among what fetch.lua's reply says a named
#: instance received (``UNLESS`` separates the reply's fields).
_UNLESS_IN_REPLY = "\x1e"


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    # A name holding a separator cannot be stored (names are validated): it
    # is left out rather than read as several names.
    if any(SEP in n or _LISTS in n for n in names):
        return tuple(n for n in names if SEP not in n and _LISTS not in n)
    return names


def encode_request(request: FetchRequest) -> tuple[str, tuple[str, ...]]:
    """fetch.lua's request argument for ``request``, and the instances it
    names (in the order their lease keys follow the script's other keys)."""
    triggers = request.triggers
    if len(triggers) == 1 and not (request.tasks or request.instances or request.kwargs):
        trigger = triggers[0]  # a fire's request: the name alone
        if SEP not in trigger and _LISTS not in trigger:
            return trigger, ()
    instances = _names(request.instances)
    lists = (_names(triggers), _names(request.tasks), instances, _names(request.kwargs))
    return _LISTS.join(map(SEP.join, lists)), instances


@functools.lru_cache(maxsize=64)
def _parts_found(flags: str) -> frozenset[str]:
    """The parts fetch.lua's flags (``'1'`` or ``'0'`` each, in ``PARTS``'
    order) say exist."""
    return frozenset(name for name, e in zip(PARTS, flags, strict=True) if e == "1")


def decode_fetch(reply: Any) -> tuple[Snapshot, frozenset[str]]:
    """fetch.lua's reply (one string: see the script): the snapshot, and the
    state keys that exist."""
    f = (reply.decode("utf-8") if isinstance(reply, bytes) else reply).split(SEP)
    meta_raw = f[0]
    snap = Snapshot(_loads(meta_raw) if meta_raw else None)  # (meta; positional costs less)
    # The index: trigger -> the tasks that mention it.
    n = int(f[1])
    p = 2 + 2 * n
    index = snap.index
    for i in range(2, p, 2):
        raw = f[i + 1]
        index[f[i]] = _loads(raw) if raw else []
    # The tasks: config and counter.
    n = int(f[p])
    configs, counters = snap.configs, snap.counters
    for i in range(p + 1, p + 1 + 3 * n, 3):
        name = f[i]
        if f[i + 1]:
            configs[name] = _config(name, f[i + 1])
        counters[name] = int(f[i + 2])
    p += 1 + 3 * n
    # The instances waiting on each (task, trigger).
    waiting = snap.waiting
    groups = int(f[p])
    p += 1
    for _ in range(groups):
        m = int(f[p + 2])
        waiting[(f[p], f[p + 1])] = f[p + 3 : p + 3 + m]
        p += 3 + m
    # The instance records, with what a named one received.
    n = int(f[p])
    p += 1
    records = snap.records
    for _ in range(n):
        raw, received = f[p + 1], f[p + 2]
        if raw:
            records[f[p]] = record = _loads(raw)
        if received:
            m = 2 * int(received)
            if raw:
                _merge_received(record, f[p + 3 : p + 3 + m], _UNLESS_IN_REPLY)
            p += m
        p += 3
    # Latest kwargs of triggers (fired or not).
    n = int(f[p])
    known, latest = snap.kwargs_known, snap.latest_kwargs
    for i in range(p + 1, p + 1 + 2 * n, 2):
        trig, raw = f[i], f[i + 1]
        known.add(trig)
        if raw:
            latest[trig] = _loads(raw)
    p += 1 + 2 * n
    # Worker leases.
    n = int(f[p])
    for i in range(p + 1, p + 1 + 2 * n, 2):
        left = int(f[i + 1])
        if left > 0:
            snap.leases[f[i]] = left
    p += 1 + 2 * n
    # Timers.
    n = int(f[p])
    for i in range(p + 1, p + 1 + 2 * n, 2):
        snap.timers[f[i]] = _loads(f[i + 1])
    p += 1 + 2 * n
    snap.idempotency_seen = f[p] == "1"
    return snap, _parts_found(f[p + 1])


def decode_all(replies: list[Any], idem: str | None) -> Snapshot:
    """The replies of a whole-session read (see ``_fetch_all``)."""
    configs_raw, inst_raw, counters_raw, kw_raw, received_raw, timers_raw = replies[:6]
    values_raw, meta_raw, waiting_raw, expiry = replies[6:]
    values = {text(k): v for k, v in values_raw.items()}
    configs = {text(k): config_from_stored(text(k), json.loads(v)) for k, v in configs_raw.items()}
    waiting: dict[tuple[str, str], list[str]] = {}
    for member in waiting_raw:
        task, trig, name = text(member).split(SEP, 2)
        waiting.setdefault((task, trig), []).append(name)
    received: dict[str, list[Any]] = {}
    for field, value in received_raw.items():
        name, _, trig = text(field).partition(SEP)
        value = text(value)
        if value.startswith("@"):
            value = values.get(value[1:], "null")
        received.setdefault(name, []).extend((trig, value))
    records = {}
    for k, v in inst_raw.items():
        name = text(k)
        records[name] = record = json.loads(v)
        if "progress" in record:  # else an older record, which holds them
            _merge_received(record, received.get(name))
    latest = {text(k): json.loads(v) for k, v in kw_raw.items()}
    return Snapshot(
        meta=json.loads(meta_raw) if meta_raw else None,
        index=build_index(configs),
        configs=configs,
        counters={text(k): int(v) for k, v in counters_raw.items() if text(k) != WAITING_FLAG},
        waiting=waiting,
        records=records,
        latest_kwargs=latest,
        kwargs_known=set(latest),
        everything=True,
        idempotency_seen=idem is not None and expiry is not None and expiry > time.time(),
        timers={text(k): json.loads(v) for k, v in timers_raw.items()},
    )


def operations(changes: Changes, lease_prefix: str, leases: list[str]) -> list[Any]:
    """commit.lua's operations for ``changes``; the lease keys they name
    are appended to ``leases`` (the script's KEYS from ``FIRST_LEASE``)."""
    ops: list[Any] = []
    for name, cfg in changes.configs.items():
        ops += [_H_CONFIG, name, dumps(cfg.to_directives())]
    if changes.index is not None:
        ops += ["X", _INDEX]
        for trig, task_names in changes.index.items():
            ops += [_H_INDEX, trig, dumps(task_names)]
    for name, inst in changes.instances.items():
        ops += [_H_INSTANCES, name, dumps(inst.to_record(kwargs=False))]
    if changes.received:
        received: list[Any] = []  # after the shared values, in one HSET
        for name, fields in changes.received.items():
            for field, kwargs in fields.items():
                value = dumps(kwargs)
                if len(value) > SHARED_VALUE_BYTES:
                    digest = _shared(value)
                    ops += ["N", _VALUES, digest, value]
                    value = "@" + digest
                received += [_H_RECEIVED, f"{name}{SEP}{field}", value]
        ops += received
    for name, gone in changes.received_drop.items():
        for field in gone:
            ops += ["D", _RECEIVED, f"{name}{SEP}{field}"]
    for task, trig, name in sorted(changes.waiting_remove):
        ops += ["R", f"{task}{SEP}{trig}{SEP}{name}"]
    for task, trig, name in sorted(changes.waiting_add):
        ops += ["Z", f"{task}{SEP}{trig}{SEP}{name}"]
    for task, number in changes.counters.items():
        ops += [_H_COUNTERS, task, str(number)]
    for trig, kwargs in changes.latest_kwargs.items():
        ops += [_H_KWARGS, trig, dumps(kwargs)]
    if changes.meta is not None:
        ops += ["S", dumps(changes.meta)]
    for timer, pending in changes.timers_add.items():
        ops += [_H_TIMERS, timer, dumps(pending)]
    for timer in changes.timers_remove:
        ops += ["D", _TIMERS, timer]
    if changes.idempotency is not None:
        key, expiry = changes.idempotency
        ops += ["I", key, repr(float(expiry)), str(max_idempotency_keys())]
    for name, (token, ms) in changes.leases_set.items():
        leases.append(lease_prefix + name)
        ops += ["L", str(FIRST_LEASE + len(leases) - 1), token, str(int(ms))]
    for name in changes.leases_drop:
        leases.append(lease_prefix + name)
        ops += ["U", str(FIRST_LEASE + len(leases) - 1)]
    return ops
