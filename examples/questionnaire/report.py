"""What the questionnaire demo prints and checks: the workflow's rules, the
timeline of fires and imports, and whether each respondent's instances
ended as the workflow says."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from examples.questionnaire.demo import Respondent

__all__ = ["describe_workflow", "timeline", "verify"]


def describe_workflow(configs: dict[str, Any]) -> str:
    """The workflow's rules, one line per task."""
    width = max(len(name) for name in configs)
    lines = ["Workflow 'questionnaire' (examples/questionnaire/workflow.json):"]
    for name, config in configs.items():
        rule = "after " + " + ".join(sorted(config.after))
        if config.and_every:
            rule += f", again for every {config.and_every}"
        if config.unless:
            rule += ", unless " + " + ".join(sorted(config.unless))
        for trigger, expression in sorted(config.conditions.items()):
            rule += f", if {trigger}: {expression}"
        deadline = config.extras.get("deadline")
        if deadline:
            rule += f", deadline {deadline['seconds']:g}s -> {deadline['fire']}"
        lines.append(f"  {name:<{width}}  {rule}")
    return "\n".join(lines)


def _describe_fire(event: dict[str, Any]) -> str:
    kwargs = event.get("kwargs") or {}
    text = f"fire {event['trigger']}"
    if event["trigger"] == "pageReceived":
        text += f" (page {kwargs.get('page')})"
    elif event["trigger"] == "firstPageReceived":
        text += f" ({kwargs.get('name')})"
    if event.get("scheduled"):
        text = text.ljust(38) + " -> scheduled " + ", ".join(event["scheduled"])
    return text


def _describe_import(event: dict[str, Any]) -> str:
    what = event["what"]
    if what == "subject":
        detail = f"{event['subjectId']} ({event['name']})"
    elif what == "responses":
        detail = f"page {event['page']}, {event['answers']} answers, for {event['subjectId']}"
    elif what == "reminder":
        return f"{event['instance']} reminded {event['name']}: {event['overdue']} overdue"
    else:
        detail = event.get("userAgent", "")
    return f"{event['instance']} imported {what}: {detail}"


def timeline(respondents: list[Respondent], events: list[dict[str, Any]], sessions: Any) -> str:
    from datetime import datetime

    labels = {r.uid: r.label for r in respondents}
    rows = list(events)
    # Abandoned instances left no record of their own; their status stamp tells when.
    for r in respondents:
        for name, inst in sessions[r.uid].items():
            stamp = inst.metadata.get("timestamps", {}).get("abandoned")
            if inst.status == "abandoned" and stamp:
                unless = ", ".join(sorted(inst.config.unless))
                rows.append({
                    "t": datetime.fromisoformat(stamp).timestamp(), "kind": "abandoned",
                    "uid": r.uid, "actor": "-", "pid": None,
                    "text": f"{name} abandoned: {unless} had fired",
                })  # fmt: skip
    rows.sort(key=lambda e: e["t"])
    start = rows[0]["t"] if rows else 0.0
    lines = []
    for e in rows:
        if e["kind"] == "fire":
            text = _describe_fire(e)
        elif e["kind"] == "import":
            text = _describe_import(e)
        elif e["kind"] == "start":
            text = f"start_session(workflow={e['workflow']!r})"
        else:
            text = e["text"]
        who = e["actor"] + (f" {e['pid']}" if e.get("pid") else "")
        offset = f"+{e['t'] - start:.3f}s"
        lines.append(f"  {offset:>8}  {who:<14} {labels[e['uid']]:<9} {text}")
    return "\n".join(lines)


def verify(r: Respondent, instances: dict[str, Any], imported: list[dict[str, Any]]) -> list[str]:
    """What went wrong for one respondent (empty: all as the workflow says)."""
    problems: list[str] = []
    actual = {name: inst.status for name, inst in instances.items()}
    expected = r.expected_statuses()
    if actual != expected:
        wrong = sorted(
            f"{n}: {actual.get(n, 'missing')} (expected {expected.get(n, 'no such instance')})"
            for n in set(actual) | set(expected)
            if actual.get(n) != expected.get(n)
        )
        problems.append("instances " + "; ".join(wrong))
    if r.dropout:
        reminders = sum(1 for e in imported if e["what"] == "reminder")
        if reminders != 1:
            problems.append(f"reminded {reminders} times, expected once (the deadline)")
        if any(e["what"] != "reminder" for e in imported):
            problems.append("data imported for a questionnaire that was never completed")
        return problems
    subjects = [e for e in imported if e["what"] == "subject"]
    if len(subjects) != 1:
        problems.append(f"subject imported {len(subjects)} times, expected once")
    subject_id = subjects[0]["subjectId"] if subjects else None
    pages = sorted(e["page"] for e in imported if e["what"] == "responses")
    if pages != list(range(1, r.pages + 1)):
        problems.append(f"responses imported for pages {pages}, expected 1..{r.pages} once each")
    if any(e["subjectId"] != subject_id for e in imported if e["what"] == "responses"):
        problems.append("responses imported for the wrong subject")
    browser = sum(1 for e in imported if e["what"] == "browser metadata")
    if browser != (0 if r.embedded else 1):
        problems.append(f"browser metadata imported {browser} times")
    return problems
