"""Sending a session operation's commands on a Redis Cluster client.

redis-py's cluster pipeline asks a server ``COMMAND GETKEYS`` for every
``EVALSHA`` it routes (a round trip more per script, measured on redis-py
8.1), and its routing costs more client time than the commands. Here each
command goes to the master of its key's slot (``RedisCluster.get_node_from_key``)
on a connection of that master's own pool: the commands for every master
are written first and the replies read after, so a commit and its session
index update, in two slots, still take one round trip. This is for
redis-py 6 and later (see :mod:`~triggers.storages.redis_wire`); an older
cluster client gets its own pipeline.

When the cluster answers ``MOVED``, ``ASK`` or ``TRYAGAIN`` (slots being
moved) or a master refuses the connection (a failover), the whole batch
goes again through redis-py's cluster pipeline, which follows the
redirection and refreshes its map of the slots. Every command
:mod:`triggers.storages.redis` sends is safe to send twice: a fetch finds
the lock already its own, a commit finds its token among the recent
commits, the index update is a ``ZADD``.
"""

from __future__ import annotations

import weakref
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["is_cluster", "refuses_cross_slot", "routed", "spans_slots"]


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (routes by key slot)."""
    return callable(getattr(client, "get_node_from_key", None))


#: Clients found talking to a server that refuses a script whose keys are in
#: several hash slots (``CROSSSLOT``: a cluster-enabled server reached by a
#: plain client, e.g. a one-node cluster).
_ONE_SLOT: weakref.WeakSet[Any] = weakref.WeakSet()
_ONE_SLOT_IDS: set[int] = set()  # clients that cannot be weakly referenced
#: Whether any client was ever added to those.
_found_one_slot = False


def spans_slots(client: Any) -> bool:
    """Whether one script sent on ``client`` may name keys of several hash
    slots (a plain client of a plain server: the commit script then updates
    the session index too)."""
    if callable(getattr(client, "get_node_from_key", None)):  # (is_cluster(), inline)
        return False
    if not _found_one_slot:
        return True  # (the usual case: no need to look the client up)
    try:
        return client not in _ONE_SLOT
    except TypeError:
        return id(client) not in _ONE_SLOT_IDS


def refuses_cross_slot(client: Any, error: Exception) -> bool:
    """Whether ``error`` is the server refusing a script whose keys span
    hash slots (nothing ran); if so, ``client`` is remembered as one whose
    scripts must keep to one slot."""
    # (redis-py 4.1+ raises its own class, without the error code)
    if type(error).__name__ != "ClusterCrossSlotError" and not str(error).startswith("CROSSSLOT"):
        return False
    global _found_one_slot
    _found_one_slot = True
    try:
        _ONE_SLOT.add(client)
    except TypeError:
        _ONE_SLOT_IDS.add(id(client))
    return True


def _key(command: tuple[Any, ...]) -> Any:
    """The key a command is routed by (``None``: it names none)."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(command[2]) > 0 else None
    return command[1] if len(command) > 1 else None


def pipelined(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` through redis-py's pipeline (error replies returned)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def routed(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` on cluster ``client``, each to its slot's master, in
    one round trip; error replies come back as exceptions in the list."""
    # (not at import time: redis-py 3, which has no cluster client, still
    # imports this module)
    from redis.exceptions import AskError, MovedError, TryAgainError

    groups: dict[str, tuple[Any, list[int]]] = {}
    for position, command in enumerate(commands):
        key = _key(command)
        if key is None:
            return pipelined(client, commands)
        node = client.get_node_from_key(key)
        groups.setdefault(node.name, (node, []))[1].append(position)
    replies: list[Any] = [None] * len(commands)
    taken: list[tuple[Any, Any]] = []
    try:
        try:
            for node, positions in groups.values():
                pool = node.redis_connection.connection_pool
                conn = pool.get_connection()
                taken.append((pool, conn))
                conn.send_packed_command(conn.pack_commands([commands[i] for i in positions]))
            for (_, conn), (_, positions) in zip(taken, groups.values(), strict=True):
                for i in positions:
                    try:
                        replies[i] = conn.read_response()
                    except ResponseError as exc:  # an error reply: the next ones follow
                        replies[i] = exc
        except RedisConnectionError:
            # A master went away (its connection is dropped, not reused):
            # let the cluster client find where the slots are now.
            for _, conn in taken:
                conn.disconnect()
            return pipelined(client, commands)
    finally:
        for pool, conn in taken:
            pool.release(conn)
    if any(isinstance(reply, (MovedError, AskError, TryAgainError)) for reply in replies):
        return pipelined(client, commands)
    return replies
