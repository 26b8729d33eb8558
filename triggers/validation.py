"""Checks for names and kwargs that end up in Redis keys and JSON documents."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from json import encoder as _json_encoder
from typing import Any

from .exceptions import InvalidTriggerError, InvalidTriggerTypeError

MAX_NAME_LENGTH = 200
MAX_UID_LENGTH = 250

# Control characters (C0, DEL, C1) would let names forge key separators or
# confuse logs; the unit separator in particular splits the waiting index.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(value: Any, what: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """Return ``value`` if it is an acceptable trigger/task/instance name."""
    if not isinstance(value, str):
        raise InvalidTriggerTypeError(
            f"{what} must be a string, not {type(value).__name__} ({value!r})"
        )
    if not value:
        raise InvalidTriggerError(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidTriggerError(
            f"{what} {value[:40]!r}... is {len(value)} characters long; the limit is {max_length}"
        )
    if value.isascii():
        # The usual name: an ASCII string is printable exactly when it holds
        # none of _CONTROL's characters (C0 and DEL), and always encodable.
        if not value.isprintable():
            raise InvalidTriggerError(f"{what} {value!r} contains control characters")
        return value
    if _CONTROL.search(value):
        raise InvalidTriggerError(f"{what} {value!r} contains control characters")
    if not _encodable(value):
        raise InvalidTriggerError(
            f"{what} {value!r} contains a lone surrogate (not valid Unicode text)"
        )
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_uid(uid: Any) -> str:
    return check_name(uid, "session uid", max_length=MAX_UID_LENGTH)


def compact_encoder(*, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
    """What ``json.dumps(value, separators=(",", ":"), ...)`` returns, made
    by one C encoder built here rather than one per call (``json.dumps``
    and ``JSONEncoder.encode`` build a new one each time, which costs more
    than encoding a small dict). It skips the circular-reference check:
    the values stored here are trees (a cycle ends in ``RecursionError``).
    Falls back to ``JSONEncoder.encode`` where ``json`` has no C encoder."""
    base = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan)
    make = getattr(_json_encoder, "c_make_encoder", None)  # (not in typeshed)
    if make is None:  # pragma: no cover - CPython always has it
        return base.encode
    quote = (
        _json_encoder.encode_basestring_ascii if ensure_ascii else _json_encoder.encode_basestring
    )
    chunks = make(None, base.default, quote, None, ":", ",", False, False, allow_nan)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


#: ``json.dumps(value, separators=(",", ":"), allow_nan=False)``.
_compact = compact_encoder(ensure_ascii=True, allow_nan=False)


def dump_json(value: Any, what: str) -> str:
    """Serialise to compact JSON, raising a library error for what cannot be."""
    try:
        return _compact(value)
    except (TypeError, ValueError) as exc:
        raise InvalidTriggerTypeError(f"{what} must serialise to JSON: {exc}") from exc
    except RecursionError:
        raise InvalidTriggerTypeError(
            f"{what} must serialise to JSON: it nests too deep or contains itself"
        ) from None


def _path(parts: tuple[Any, ...]) -> str:
    return "kwargs" + "".join(f"[{p!r}]" for p in parts)


#: Types whose values a JSON round trip gives back equal and of the same type.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def check_json_tree(what: str, value: Any, max_depth: int) -> bool:
    """Refuse what JSON cannot hold faithfully, naming where it is
    (``kwargs['a'][2]['b']``): values of other types, non-finite floats, text
    with lone surrogates, non-string keys, and nesting deeper than
    ``max_depth`` (which would otherwise hit Python's recursion limit inside
    a locked operation). Iterative, so any depth is safe to inspect.

    Returns whether ``value`` is flat: a container holding only values (and
    keys) of exactly the plain JSON types (no subclass, no nested container),
    so that a shallow copy gives what a JSON round trip would."""
    if type(value) is dict:
        # The usual kwargs (ASCII keys; ASCII text, int, bool or None
        # values) need no walk; anything else takes the general one.
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or not key.isascii():
                break
            if kind is str:
                if not item.isascii():
                    break
            elif not (kind is int or kind is bool or item is None):
                break
        else:
            return True
    flat = True
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, parts = stack.pop()
        kind = type(item)
        if kind is int or kind is bool or item is None:  # the common cases first
            continue
        if parts and kind not in _PLAIN:
            flat = False  # a subclass or a nested container: not shallow-copyable
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                raise InvalidTriggerError(f"{what}: {_path(parts)} contains a lone surrogate")
            continue
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidTriggerTypeError(
                    f"{what}: {_path(parts)} is {item!r}, which JSON cannot represent"
                )
            continue
        if kind is dict or kind is list or isinstance(item, Mapping | list | tuple):
            if len(parts) > max_depth:
                raise InvalidTriggerError(
                    f"{what}: {_path(parts)} nests deeper than {max_depth} levels "
                    "(TRIGGERS['MAX_KWARGS_DEPTH'])"
                )
            if kind is dict or (kind is not list and isinstance(item, Mapping)):
                for key, child in item.items():
                    if type(key) is not str:
                        flat = False
                    if not isinstance(key, str):
                        raise InvalidTriggerTypeError(
                            f"{what}: {_path(parts)} has a non-string key {key!r}; "
                            "JSON object keys are strings"
                        )
                    if not key.isascii() and not _encodable(key):
                        raise InvalidTriggerError(
                            f"{what}: a key of {_path(parts)} contains a lone surrogate"
                        )
                    stack.append((child, (*parts, key)))
            else:
                stack.extend((child, (*parts, i)) for i, child in enumerate(item))
            continue
        raise InvalidTriggerTypeError(
            f"{what}: {_path(parts)} is a {type(item).__name__} ({item!r:.60}), "
            "which JSON cannot represent"
        )
    return flat


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and immutable scalars), a
    few times cheaper than ``copy.deepcopy``; anything else is deep-copied."""
    kind = type(value)
    if kind is dict:
        # (A loop, not a comprehension and the call it costs: every
        # instance a fire reaches gets a copy of its kwargs.)
        copied: dict[Any, Any] = {}
        for k, v in value.items():
            copied[k] = v if type(v) in _PLAIN else copy_json(v)
        return copied
    if kind is list:
        return [v if type(v) in _PLAIN else copy_json(v) for v in value]
    if kind in _PLAIN:
        return value
    return copy.deepcopy(value)


def _plain_json_size(value: dict[Any, Any]) -> int | None:
    """``len(dump_json(value))`` for the usual kwargs, worked out without
    encoding them: a dict whose keys are text and whose values are text,
    ints, booleans or ``None``, every text printable ASCII without a quote
    or backslash (what the encoder writes as it is, between quotes).
    ``None`` for anything else (including an int too long to write out),
    which the general path then checks and encodes."""
    size = 1  # the opening brace; each item then adds its closing comma or brace
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() and key.isprintable()):
            return None
        if '"' in key or "\\" in key:
            return None
        kind = type(item)
        if kind is str:
            if not (item.isascii() and item.isprintable()) or '"' in item or "\\" in item:
                return None
            size += len(item) + 2
        elif kind is int:
            try:
                size += len(repr(item))
            except ValueError:  # more digits than int-to-text conversion allows
                return None
        elif kind is bool:
            size += 4 if item else 5
        elif item is None:
            size += 4
        else:
            return None
        size += len(key) + 4  # two quotes, the colon and the separator
    return size if value else 2


def normalise_kwargs(
    trigger_name: str,
    trigger_kwargs: Any,
    *,
    max_bytes: int | None = None,
    max_depth: int | None = None,
) -> dict[str, Any]:
    """Validate trigger kwargs and return a private JSON-round-tripped copy, so
    what a task later receives is exactly what was stored."""
    if trigger_kwargs is None:
        return {}
    # (A dict is a Mapping: asking the ABC costs a Python-level call.)
    if type(trigger_kwargs) is not dict and not isinstance(trigger_kwargs, Mapping):
        raise InvalidTriggerTypeError(
            f"kwargs for trigger {trigger_name!r} must be a mapping, "
            f"not {type(trigger_kwargs).__name__}"
        )
    if type(trigger_kwargs) is dict and max_depth is not None:
        # The usual kwargs (see _plain_json_size) pass every check below,
        # and a shallow copy is private: only their size is left to check,
        # which they give without being encoded (every fire normalises them).
        size = _plain_json_size(trigger_kwargs)
        if size is not None and (max_bytes is None or size <= max_bytes):
            return dict(trigger_kwargs)
    for key in trigger_kwargs:
        if not isinstance(key, str):
            raise InvalidTriggerTypeError(
                f"kwargs for trigger {trigger_name!r} must have string keys, got {key!r}"
            )
    if max_depth is None:
        from . import conf

        max_depth = int(conf.get("MAX_KWARGS_DEPTH"))
    what = f"kwargs for trigger {trigger_name!r}"
    flat = check_json_tree(what, trigger_kwargs, max_depth)
    copied = dict(trigger_kwargs)
    text = dump_json(copied, what)  # ASCII (ensure_ascii): one byte per character
    if max_bytes is not None and len(text) > max_bytes:
        raise InvalidTriggerError(
            f"kwargs for trigger {trigger_name!r} are {len(text)} bytes "
            f"as JSON; the limit is {max_bytes} (TRIGGERS['MAX_KWARGS_BYTES'])"
        )
    if flat:
        return copied  # only immutable plain values: the copy is already private
    result: dict[str, Any] = json.loads(text)
    return result
