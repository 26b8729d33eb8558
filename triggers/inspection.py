"""What a session is doing, for people: which instances wait on which
triggers, which failed and why, which look stuck. ``triggers_inspect`` prints
:func:`render_session_table` of :func:`inspect_session`; the same report is
available from Python and as JSON.

.. code-block:: python

    >>> describe_waiting(manager.storage["t_importSubject#0"])
    'waiting on 1 of 2: questionnaireComplete'

A group counts as one requirement (``'waiting on 1 of 2: any of cardPaid,
invoicePaid'``), and a trigger with an ``if`` condition shows it
(``'paymentReceived [if kwargs.amount > 1000]'``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from . import conf
from .conditions import Rule, evaluate
from .storages.base import BaseTriggerStorage
from .storages.transaction import leases_left
from .types import TaskConfig, TaskInstance

__all__ = [
    "describe_instance",
    "describe_waiting",
    "find_stuck",
    "fired_for",
    "inspect_session",
    "render_session_table",
    "waiting_by_instance",
    "waiting_on",
    "waiting_text",
]

#: Longest result shown in the table (the JSON report has it whole).
RESULT_WIDTH = 60


def waiting_on(instance: TaskInstance) -> list[str]:
    """The ``after`` triggers an unstarted instance still needs (sorted);
    empty for any other status."""
    if instance.status != TaskInstance.STATUS_UNSTARTED:
        return []
    return sorted(instance.missing_triggers)


def waiting_by_instance(instances: Iterable[TaskInstance]) -> dict[str, list[str]]:
    """Every unstarted instance's name -> the ``after`` triggers it still needs."""
    return {
        inst.name: waiting_on(inst)
        for inst in instances
        if inst.status == TaskInstance.STATUS_UNSTARTED
    }


def find_stuck(storage: BaseTriggerStorage, older_than: float | None = None) -> list[TaskInstance]:
    """Instances ``scheduled``/``running`` for ``older_than`` seconds or more,
    or ready but never sent for that long, leaving out running ones whose
    worker still renews its lease (see ``TriggerManager.find_stuck_instances``)."""
    limit = float(conf.get("STUCK_AFTER") if older_than is None else older_than)
    now = datetime.now(UTC)
    found: list[TaskInstance] = []
    for inst in storage.instances.values():
        if inst.status in (TaskInstance.STATUS_SCHEDULED, TaskInstance.STATUS_RUNNING):
            stamp = inst.metadata.get("timestamps", {}).get(inst.status)
        elif inst.can_run:
            stamp = inst.metadata.get("timestamps", {}).get("last_modified")
        else:
            continue
        try:
            since = datetime.fromisoformat(stamp) if stamp else None
        except (TypeError, ValueError):
            since = None
        if since is None or (now - since).total_seconds() >= limit:
            found.append(inst)
    running = [i.name for i in found if i.status == TaskInstance.STATUS_RUNNING]
    if running:
        leases = leases_left(storage, running)
        found = [i for i in found if leases.get(i.name, 0) <= 0]
    return found


class Inspectable(Protocol):
    """A manager, as far as a report needs one."""

    storage: BaseTriggerStorage

    def find_stuck_instances(self, older_than: float | None = None) -> list[TaskInstance]: ...


def waiting_text(missing: Iterable[str], after: Collection[str]) -> str:
    """``'waiting on 1 of 2: questionnaireComplete'``: ``missing`` of the
    task's ``after`` triggers have not fired (for instances and for tasks
    without one alike)."""
    missing = list(missing)
    return f"waiting on {len(missing)} of {len(after)}: {', '.join(missing)}"


def requirements_text(config: TaskConfig, received: Collection[str]) -> str:
    """``'waiting on 1 of 2: any of x, y'``: what of the task's ``after``
    (each plain name and each group one requirement) ``received`` lacks."""
    rule: Rule = config.after_rule
    done, total = rule.progress(received)
    words = [
        f"{word} [if {config.conditions[word]}]" if word in config.conditions else word
        for word in rule.pending(received)
    ]
    return f"waiting on {total - done} of {total}: {', '.join(words)}"


def fired_for(config: TaskConfig, latest_kwargs: dict[str, Any]) -> set[str]:
    """The fired triggers that count for ``config``: those whose ``if``
    condition (if any) holds on their latest kwargs."""
    return {
        name
        for name, kwargs in latest_kwargs.items()
        if name not in config.conditions or evaluate(config.conditions[name], kwargs)[0]
    }


def describe_waiting(instance: TaskInstance) -> str:
    """``'waiting on 1 of 2: questionnaireComplete'`` for an unstarted
    instance; ``''`` when it waits on nothing."""
    if not waiting_on(instance):
        return ""
    return requirements_text(instance.config, instance.kwargs)


def _short_type(qualified: str) -> str:
    return qualified.removeprefix("builtins.")


def _compact(value: Any, width: int = RESULT_WIDTH) -> str:
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_instance(
    instance: TaskInstance, *, stuck: bool = False, replayed_as: str | None = None
) -> str:
    """One line saying what an instance is doing or how it ended."""
    meta = instance.metadata
    status = instance.status
    if status == TaskInstance.STATUS_UNSTARTED:
        if instance.can_run:
            error = meta.get("dispatch_error")
            return f"ready, not sent: {error}" if error else "ready"
        return describe_waiting(instance)
    if status in (TaskInstance.STATUS_SCHEDULED, TaskInstance.STATUS_RUNNING):
        since = meta.get("timestamps", {}).get(status, "?")
        text = f"{status} since {since}"
        if status == TaskInstance.STATUS_RUNNING and meta.get("worker"):
            text += f" on {meta['worker']}"
        return f"STUCK: {text}" if stuck else text
    if status == TaskInstance.STATUS_FINISHED:
        return f"result: {_compact(meta.get('result', {}))}"
    if status == TaskInstance.STATUS_FAILED:
        return f"{_short_type(meta.get('exc_type', 'Exception'))}: {meta.get('exc_message', '')}"
    if status == TaskInstance.STATUS_REPLAYED:
        return f"replayed as {replayed_as}" if replayed_as else "replayed"
    if status == TaskInstance.STATUS_ABANDONED:
        return f"unless {', '.join(instance.config.unless_rule.describe())} fired"
    return ""


def inspect_session(manager: Inspectable, stuck_after: float | None = None) -> dict[str, Any]:
    """A JSON-ready report of one session: its tasks, every instance with
    status and detail, what unstarted ones wait on, and which look stuck
    (``TriggerManager.find_stuck_instances``; ``stuck_after`` defaults to
    ``TRIGGERS['STUCK_AFTER']``)."""
    storage = manager.storage
    tasks = storage.tasks
    instances = storage.instances
    metadata = storage.metadata
    stuck = {i.name for i in manager.find_stuck_instances(stuck_after)}
    clones = {
        inst.metadata["parent"]: name
        for name, inst in instances.items()
        if inst.metadata.get("parent")
    }
    rows = []
    for name, inst in instances.items():
        meta = inst.metadata
        row: dict[str, Any] = {
            "name": name,
            "task": inst.config.name,
            "status": inst.status,
            "detail": describe_instance(inst, stuck=name in stuck, replayed_as=clones.get(name)),
            "waiting_on": waiting_on(inst),
            "after": sorted(inst.config.after),
            "stuck": name in stuck,
            "timestamps": meta.get("timestamps", {}),
        }
        if inst.status == TaskInstance.STATUS_FINISHED:
            row["result"] = meta.get("result", {})
        if "exc_type" in meta:
            row["exception"] = {"type": meta["exc_type"], "message": meta.get("exc_message", "")}
        if meta.get("parent"):
            row["parent"] = meta["parent"]
        rows.append(row)
    with_instances = {inst.config.name for inst in instances.values()}
    latest = metadata.get("latest_kwargs") or {}
    fired = set(latest)
    pending = []
    for name, config in tasks.items():
        if name in with_instances:
            continue
        counted = fired_for(config, latest)
        missing = sorted(config.after_rule.missing(counted))
        text = requirements_text(config, counted) if missing else ""
        pending.append(
            {
                "task": name,
                "waiting_on": missing,
                "after": sorted(config.after),
                "waiting": text,
                "detail": f"no instance yet; {text}" if text else "no instance yet",
            }
        )
    return {
        "uid": storage.uid,
        "workflow": metadata.get("workflow"),
        "exists": bool(tasks or instances or fired),
        "tasks": {name: config.to_directives() for name, config in tasks.items()},
        "fired": sorted(fired),
        "instances": rows,
        "tasks_without_instances": pending,
        # Pending timers (delayed fires, deadlines), earliest first.
        "timers": storage.timers,
        "summary": dict(sorted(Counter(inst.status for inst in instances.values()).items())),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_session_table(report: dict[str, Any]) -> str:
    """The report of :func:`inspect_session` as an aligned text table."""
    workflow = f" (workflow {report['workflow']})" if report.get("workflow") else ""
    counts = ", ".join(f"{n} {status}" for status, n in report["summary"].items())
    lines = [
        f"Session {report['uid']!r}{workflow}: {_count(len(report['tasks']), 'task')}, "
        f"{_count(len(report['instances']), 'instance')}" + (f" ({counts})" if counts else "")
    ]
    table = [("INSTANCE", "STATUS", "DETAIL")]
    table += [(row["name"], row["status"], row["detail"]) for row in report["instances"]]
    for task in report["tasks_without_instances"]:
        table.append((task["task"], "-", task["detail"]))
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    for name, status, detail in table:
        lines.append(f"  {name.ljust(widths[0])}  {status.ljust(widths[1])}  {detail}".rstrip())
    for timer in report.get("timers", ()):
        what = f"deadline of {timer['instance']}" if timer.get("instance") else "delayed fire"
        lines.append(f"  timer: {timer['trigger']} due {timer['due']} ({what})")
    stuck = [row["name"] for row in report["instances"] if row["stuck"]]
    if stuck:
        lines.append(
            f"{_count(len(stuck), 'instance')} {'looks' if len(stuck) == 1 else 'look'} stuck; "
            f"`manage.py triggers_resend "
            f"{report['uid']}` sends them to their runner again."
        )
    return "\n".join(lines)
