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

from .base import config_from_stored
from .data import UNLESS, Changes, Snapshot, build_index, max_idempotency_keys

__all__ = [
    "FIRST_LEASE",
    "PARTS",
    "SEP",
    "SUFFIXES",
    "WAITING_FLAG",
    "decode_all",
    "decode_fetch",
    "dumps",
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
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@functools.lru_cache(maxsize=512)
def _config(name: str, raw: str) -> Any:
    """A stored config, parsed once per process and stored form (a wide
    task's directives are large; configs are never changed in place)."""
    return config_from_stored(name, json.loads(raw))


def _shared(value: str) -> str:
    """The ``:values`` field of a large received value (a 128-bit digest)."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def _merge_received(record: dict[str, Any], fields: Any) -> None:
    """Put what a named instance received (``[trigger, kwargs JSON, ...]``,
    ``UNLESS + trigger`` for ``unless``) into its record, making it whole."""
    kwargs: dict[str, Any] = {}
    abandon: dict[str, Any] = {}
    fields = fields or []
    for i in range(0, len(fields), 2):
        name = fields[i]
        if name.startswith(UNLESS):
            abandon[name[len(UNLESS) :]] = json.loads(fields[i + 1])
        else:
            kwargs[name] = json.loads(fields[i + 1])
    record["kwargs"] = kwargs
    record["abandon_state"] = abandon


def decode_fetch(parts: list[Any]) -> tuple[Snapshot, set[str]]:
    """fetch.lua's reply: the snapshot, and the state keys that exist."""
    # Empty arrays come back as {} (Lua cannot tell them from objects).
    meta_raw: Any
    meta_raw, index_raw, tasks_raw, waiting_raw, inst_raw, kw_raw, lease_raw, exist = (
        part or [] for part in parts[:8]
    )
    received_raw, seen, timers_raw = parts[8] or [], parts[9], parts[10] or []
    found = {name for name, e in zip(PARTS, exist, strict=False) if e}
    snap = Snapshot(meta=json.loads(meta_raw) if meta_raw else None)
    snap.idempotency_seen = bool(seen)
    for i in range(0, len(timers_raw), 2):
        snap.timers[timers_raw[i]] = json.loads(timers_raw[i + 1])
    for i in range(0, len(index_raw), 2):
        snap.index[index_raw[i]] = json.loads(index_raw[i + 1]) if index_raw[i + 1] else []
    for i in range(0, len(tasks_raw), 3):
        name = tasks_raw[i]
        if tasks_raw[i + 1]:
            snap.configs[name] = _config(name, tasks_raw[i + 1])
        snap.counters[name] = int(tasks_raw[i + 2])
    for i in range(0, len(waiting_raw), 3):
        snap.waiting[(waiting_raw[i], waiting_raw[i + 1])] = waiting_raw[i + 2] or []
    for i in range(0, len(inst_raw), 2):
        if inst_raw[i + 1]:
            snap.records[inst_raw[i]] = json.loads(inst_raw[i + 1])
    for i in range(0, len(received_raw), 2):
        record = snap.records.get(received_raw[i])
        if record is not None:
            _merge_received(record, received_raw[i + 1])
    for i in range(0, len(kw_raw), 2):
        trig = kw_raw[i]
        snap.kwargs_known.add(trig)
        if kw_raw[i + 1]:
            snap.latest_kwargs[trig] = json.loads(kw_raw[i + 1])
    for i in range(0, len(lease_raw), 2):
        if lease_raw[i + 1] > 0:
            snap.leases[lease_raw[i]] = int(lease_raw[i + 1])
    return snap, found


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
        ops += ["H", _CONFIG, name, dumps(cfg.to_directives())]
    if changes.index is not None:
        ops += ["X", _INDEX]
        for trig, task_names in changes.index.items():
            ops += ["H", _INDEX, trig, dumps(task_names)]
    for name, inst in changes.instances.items():
        ops += ["H", _INSTANCES, name, dumps(inst.to_record(kwargs=False))]
    for name, fields in changes.received.items():
        for field, kwargs in fields.items():
            value = dumps(kwargs)
            if len(value) > SHARED_VALUE_BYTES:
                digest = _shared(value)
                ops += ["N", _VALUES, digest, value]
                value = "@" + digest
            ops += ["H", _RECEIVED, f"{name}{SEP}{field}", value]
    for name, gone in changes.received_drop.items():
        for field in gone:
            ops += ["D", _RECEIVED, f"{name}{SEP}{field}"]
    for task, trig, name in sorted(changes.waiting_remove):
        ops += ["R", f"{task}{SEP}{trig}{SEP}{name}"]
    for task, trig, name in sorted(changes.waiting_add):
        ops += ["Z", f"{task}{SEP}{trig}{SEP}{name}"]
    for task, number in changes.counters.items():
        ops += ["H", _COUNTERS, task, str(number)]
    for trig, kwargs in changes.latest_kwargs.items():
        ops += ["H", _KWARGS, trig, dumps(kwargs)]
    if changes.meta is not None:
        ops += ["S", dumps(changes.meta)]
    for timer, pending in changes.timers_add.items():
        ops += ["H", _TIMERS, timer, dumps(pending)]
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
