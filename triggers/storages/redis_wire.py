"""Sending a session operation's commands to Redis: the Lua scripts of
:mod:`triggers.storages.redis` and the commands queued beside them, in one
round trip.

On a plain ``redis.Redis`` client of redis-py 6 or later the commands go
straight to one connection of the client's pool -- the one the thread keeps
(:mod:`triggers.connections`) on a plain ``ConnectionPool`` -- through
redis-py's public ``ConnectionPool.get_connection``/``release`` and
``Connection.send_packed_command`` / ``read_response``, retried with the
connection's own retry policy, as the client itself would: a client-level
call costs several times more CPU than the bytes it sends. A cluster client
of redis-py 6 or later sends each command to its slot's master
(:mod:`~triggers.storages.cluster_wire`). Any other client -- a project's
own class, or any client of an older redis-py -- gets each command through
its own ``execute_command``, a round trip each, so that its own rules apply:
before redis-py 6 a client retries only the errors its ``retry_on_error``
lists (redis-py 3 has no retry policy at all), its pipeline retries by
other rules, and a pool wants a command name to hand out a connection.
Either way a script missing from the server's cache (``NOSCRIPT``) is
loaded and sent again: both scripts are safe to send twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ..connections import keeps_connections, kept_connection
from .cluster_wire import is_cluster, routed

__all__ = ["Script", "run"]


class Script:
    """A Lua script shipped in ``triggers/storages/lua``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("triggers.storages").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command that runs it."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


#: Whether this redis-py's client retries a command by its connection's
#: ``retry`` policy alone (redis-py 6 and later), which :func:`_retried` does
#: too; an older client raises the errors its ``retry_on_error`` does not
#: list, and its pool wants a command name.
DIRECT = redis.VERSION >= (6,)


#: The client classes whose commands :func:`run` sends itself (with DIRECT).
_PLAIN_CLIENTS = (redis.Redis, redis.StrictRedis)


def _direct(client: Any) -> bool:
    return (
        DIRECT
        and type(client) in _PLAIN_CLIENTS
        and isinstance(getattr(client, "connection_pool", None), redis.ConnectionPool)
    )


def run(
    client: Any,
    commands: list[tuple[Any, ...]],
    scripts: dict[str, Script],
    holder: Any = None,
) -> list[Any]:
    """Send ``commands`` (in one round trip but on a client of the last kind
    the module's docstring lists) and return their replies (an error reply
    is raised); ``scripts`` maps the SHA1 of each script the
    commands run to the script, to load it if the server lacks it.
    ``holder`` (a :class:`~triggers.locking.SessionLock`) keeps one pool
    connection for the whole operation."""
    # (_direct(client), inline: this runs twice per operation.)
    pool = client.connection_pool if DIRECT and type(client) in _PLAIN_CLIENTS else None
    direct = isinstance(pool, redis.ConnectionPool)
    if direct and holder is not None:
        # An operation's command on its own connection (every command of a
        # fire): the exchange is made here, and the retry policy only steps
        # in when it fails (see _retried_after).
        conn = holder.connection(pool)
        try:
            replies = _exchange(conn, commands)
        except BaseException as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        if failure is not None:
            # (Out of the handler: what the retries raise is not chained to it.)
            kept = keeps_connections(pool)
            replies = _retried_after(conn, commands, kept, failure)
    else:
        replies = _send(client, commands, holder, direct)
    for reply in replies:
        if isinstance(reply, ResponseError):  # rare: checked once, then sorted out
            return _answered(client, commands, replies, scripts, holder, direct)
    return replies


def _send(client: Any, batch: list[tuple[Any, ...]], holder: Any, direct: bool) -> list[Any]:
    if direct:
        return _direct_run(client, batch, holder)
    if DIRECT and is_cluster(client):
        return routed(client, batch)  # see cluster_wire: the pipeline's routing is slow
    return _one_by_one(client, batch)


def _answered(
    client: Any,
    commands: list[tuple[Any, ...]],
    replies: list[Any],
    scripts: dict[str, Script],
    holder: Any,
    direct: bool,
) -> list[Any]:
    """``replies`` with the scripts the server lacked loaded and run again;
    raises any other error reply."""
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for sha in {commands[i][1] for i in missing}:
            client.script_load(scripts[sha].source)
        resent = _send(client, [commands[i] for i in missing], holder, direct)
        for i, reply in zip(missing, resent, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, ResponseError) and not isinstance(reply, NoScriptError):
            raise reply
    return replies


def _direct_run(client: Any, commands: list[tuple[Any, ...]], holder: Any) -> list[Any]:
    pool = client.connection_pool
    kept = keeps_connections(pool)
    if holder is not None:
        return _retried(holder.connection(pool), commands, kept)
    if kept:
        return _retried(kept_connection(pool), commands, kept)
    conn = pool.get_connection()
    try:
        return _retried(conn, commands)
    finally:
        pool.release(conn)


def _retried(conn: Any, commands: list[tuple[Any, ...]], kept: bool = False) -> list[Any]:
    # As redis-py 6+'s client does: the connection's retry policy,
    # reconnecting after a failure (both scripts are safe to send again).
    return _with_retries(conn, lambda: _exchange(conn, commands), commands, kept)


def _retried_after(
    conn: Any, commands: list[tuple[Any, ...]], kept: bool, failure: BaseException
) -> list[Any]:
    """What :func:`_retried` returns or raises when its first exchange has
    already failed with ``failure``: the retry policy is given that failure
    as its first attempt's, so it counts, reconnects and backs off exactly as
    if it had made that attempt itself."""
    pending = [failure]

    def exchange() -> list[Any]:
        if pending:
            raise pending.pop()
        return _exchange(conn, commands)

    return _with_retries(conn, exchange, commands, kept)


def _with_retries(
    conn: Any, exchange: Callable[[], list[Any]], commands: list[tuple[Any, ...]], kept: bool
) -> list[Any]:
    try:
        try:
            return list(conn.retry.call_with_retry(exchange, lambda _error: conn.disconnect()))
        except RedisConnectionError:
            if not kept:
                raise
            # A kept connection may have died while the thread did something
            # else (a Redis restart, an idle timeout): what the pool's
            # checkout would have noticed. Reconnect and send once more.
            conn.disconnect()
            return list(
                conn.retry.call_with_retry(
                    lambda: _exchange(conn, commands), lambda _error: conn.disconnect()
                )
            )
    except BaseException:
        # Replies may still be due (an interrupt, an unexpected reply): a
        # kept connection must not hand them to the next operation.
        conn.disconnect()
        raise


#: ``\r\n$<n>\r\n``: the end of the argument before (or of the command's
#: ``*<count>``) and the head of one of ``n`` bytes, made once for the sizes
#: most arguments have (formatting the number is most of the cost of a short
#: argument, and one piece per argument saves an append of its own ``\r\n``).
_JOINS = tuple(f"\r\n${n}\r\n" for n in range(1024))
#: ``*<n>``, the head of a command of ``n`` arguments: the first command's,
#: then the next ones' (which end the argument before).
_FIRST_COUNTS = tuple(f"*{n}" for n in range(256))
_NEXT_COUNTS = tuple(f"\r\n*{n}" for n in range(256))
#: The head of recent script calls in RESP (``EVALSHA``, the script's SHA,
#: the number of keys and the keys), by the head, and how many more bytes
#: than characters it holds: a session's keys are the same in every call of
#: every operation on it (its storage object names them once per process),
#: so they are packed once, not per call.
_PACKED_KEYS: dict[tuple[Any, ...], tuple[str, int]] = {}
_PACKED_KEYS_MAX = 2048


def _count(size: int, first: bool) -> str:
    return f"*{size}" if first else f"\r\n*{size}"


def _text(arg: Any) -> str:
    """An argument other than a ``str`` as the text it is sent as."""
    kind = type(arg)
    if kind is int or kind is float:
        return repr(arg)
    if kind is bytes:
        # Back to the same bytes when the text is encoded (see pack()).
        return arg.decode("utf-8", "surrogateescape")
    raise TypeError(f"cannot send {kind.__name__} {arg!r} to Redis")


def _pack_args_exactly(args: Any, out: list[str]) -> None:
    """``args`` packed with each head counting the bytes its argument
    encodes to (pack()'s heads count characters, the same for ASCII)."""
    add, joins = out.append, _JOINS
    for arg in args:
        if type(arg) is not str:
            arg = _text(arg)
        size = len(arg) if arg.isascii() else len(arg.encode("utf-8", "surrogateescape"))
        add(joins[size] if size < 1024 else f"\r\n${size}\r\n")
        add(arg)


def _packed_keys(head: tuple[Any, ...]) -> tuple[str, int]:
    out: list[str] = []
    _pack_args_exactly(head, out)
    text = "".join(out)
    if len(_PACKED_KEYS) >= _PACKED_KEYS_MAX:
        _PACKED_KEYS.clear()  # many sessions: start over rather than track use
    found = _PACKED_KEYS[head] = (text, len(text.encode("utf-8", "surrogateescape")) - len(text))
    return found


def _pack_args(args: Any, out: list[str]) -> None:
    """``args`` packed with each head counting the characters of its
    argument (:func:`pack` checks the count; an argument of 1024 characters
    or more raises IndexError)."""
    joins = _JOINS
    for arg in args:
        if type(arg) is not str:
            kind = type(arg)
            arg = repr(arg) if kind is int or kind is float else _text(arg)
        out.append(joins[len(arg)])
        out.append(arg)


def _pack_with(
    commands: list[tuple[Any, ...]], pack_args: Callable[[Any, list[str]], None]
) -> tuple[str, int]:
    """``commands`` as RESP text, their arguments packed by ``pack_args``,
    and how many more bytes than characters the cached script heads hold."""
    out: list[str] = []
    counts, extra = _FIRST_COUNTS, 0
    for command in commands:
        size = len(command)
        out.append(counts[size] if size < 256 else _count(size, counts is _FIRST_COUNTS))
        counts = _NEXT_COUNTS
        args = command
        if command[0] == "EVALSHA" and type(command[2]) is int:
            end = 3 + command[2]  # EVALSHA, the SHA, the count and the keys
            head = command[:end]
            found = _PACKED_KEYS.get(head)
            if found is None:
                found = _packed_keys(head)
            out.append(found[0])
            extra += found[1]
            args = command[end:]
        pack_args(args, out)
    out.append("\r\n")
    return "".join(out), extra


def pack(commands: list[tuple[Any, ...]]) -> bytes:
    """``commands`` in the Redis protocol (RESP): what
    ``Connection.pack_commands`` makes, for the ``str``/``int``/``float``/
    ``bytes`` arguments these commands have, several times faster
    (redis-py's packer checks and encodes each argument on its own; here the
    text is built as one string and encoded once, and the KEYS of a script
    call come packed from :data:`_PACKED_KEYS`).

    Each argument's head counts its characters: an argument encodes to at
    least one byte per character, so when the whole text encodes to exactly
    as many bytes as it has characters (beyond the cached heads' own excess)
    every head was right; else, rarely, the text is packed again with each
    head counting bytes."""
    try:
        text, extra = _pack_with(commands, _pack_args)
    except IndexError:  # an argument of 1024 characters or more
        return _pack_exactly(commands)
    data = text.encode("utf-8", "surrogateescape")
    if len(data) != len(text) + extra:
        return _pack_exactly(commands)
    return data


def _pack_exactly(commands: list[tuple[Any, ...]]) -> bytes:
    """What :func:`pack` returns, each argument's head counting the bytes it
    encodes to."""
    return _pack_with(commands, _pack_args_exactly)[0].encode("utf-8", "surrogateescape")


def _exchange(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    conn.send_packed_command([pack(commands)])
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:  # an error reply: the next replies still follow
            replies.append(exc)
    return replies


def _one_by_one(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` sent by the client itself, one call each."""
    replies: list[Any] = []
    for command in commands:
        try:
            replies.append(client.execute_command(*command))
        except ResponseError as exc:  # an error reply, as the other ways return it
            replies.append(exc)
    return replies
