"""A workflow as a graph: triggers feed tasks, tasks cascade into the tasks
that wait on them. Rendered as Mermaid (GitHub, Sphinx, mermaid.live) or
Graphviz DOT; with a session's instances, task nodes are coloured by status.

Edges: ``after`` is a solid arrow, ``andEvery`` a thick arrow labelled
"every", ``unless`` a dashed arrow labelled "unless", and a cascade (a task
whose name another task waits on) a solid arrow labelled "cascade". A group
(``anyOf``/``atLeast``) is a small node of its own ("any of", "2 of 3") that
its members point to and that points to the task; a trigger with an ``if``
condition has the expression on its edge ("if kwargs.amount > 1000"). A
``deadline`` is a dotted edge from the task to the trigger it fires,
labelled with its delay ("deadline 2d").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .schedule import deadline_of
from .types import TaskConfig, TaskInstance

__all__ = [
    "Graph",
    "build_graph",
    "find_cascade_cycle",
    "task_state",
    "to_dot",
    "to_json",
    "to_mermaid",
]

AFTER, EVERY, UNLESS, CASCADE, DEADLINE = "after", "every", "unless", "cascade", "deadline"

# Which status a task node shows when its instances differ: what needs a
# person's attention first.
_PRECEDENCE = (
    TaskInstance.STATUS_FAILED,
    TaskInstance.STATUS_RUNNING,
    TaskInstance.STATUS_SCHEDULED,
    TaskInstance.STATUS_UNSTARTED,
    TaskInstance.STATUS_FINISHED,
    TaskInstance.STATUS_SKIPPED,
    TaskInstance.STATUS_REPLAYED,
    TaskInstance.STATUS_ABANDONED,
)
# (fill, border); "fired"/"not fired" colour trigger nodes, "none" tasks with
# no instance yet.
COLOURS = {
    TaskInstance.STATUS_FAILED: ("#f8d7da", "#b02a37"),
    TaskInstance.STATUS_RUNNING: ("#cfe2ff", "#0a58ca"),
    TaskInstance.STATUS_SCHEDULED: ("#e0ecff", "#3d8bfd"),
    TaskInstance.STATUS_UNSTARTED: ("#fff3cd", "#b58105"),
    TaskInstance.STATUS_FINISHED: ("#d1e7dd", "#146c43"),
    TaskInstance.STATUS_SKIPPED: ("#e2e3e5", "#6c757d"),
    TaskInstance.STATUS_REPLAYED: ("#e2e3e5", "#6c757d"),
    TaskInstance.STATUS_ABANDONED: ("#e9ecef", "#adb5bd"),
    "none": ("#ffffff", "#adb5bd"),
    "fired": ("#d1e7dd", "#146c43"),
    "not fired": ("#ffffff", "#6c757d"),
}


#: Separates the parts of a group node's name (task, part, index joined by tabs): no
#: trigger or task name holds a control character, so a group node never
#: takes another node's name; a tab is still valid in XML (the SVG).
GROUP_SEP = "\t"


@dataclass
class Node:
    name: str
    kind: str  # "trigger", "task" or "group"
    state: str | None = None  # a status, "none", "fired" or "not fired"; None without a session
    label: str = ""


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, kind)
    #: (source, target) -> the ``if`` condition on that edge.
    conditions: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (task, trigger) -> seconds of the task's ``deadline`` firing the trigger.
    deadlines: dict[tuple[str, str], float] = field(default_factory=dict)

    def edge_label(self, source: str, target: str, kind: str) -> str:
        """What an edge says: its kind (but plain ``after``), a deadline's
        delay and the condition."""
        words = [] if kind == AFTER else [kind]
        if kind == DEADLINE:
            words = [f"deadline {duration(self.deadlines[(source, target)])}"]
        condition = self.conditions.get((source, target))
        if condition:
            words.append(f"if {condition}")
        return ", ".join(words)


def task_state(statuses: Iterable[str]) -> str:
    """The status a task node shows for its instances' statuses."""
    present = set(statuses)
    for status in _PRECEDENCE:
        if status in present:
            return status
    return "none"


def build_graph(
    configs: Mapping[str, TaskConfig],
    instances: Iterable[TaskInstance] | None = None,
    fired: Iterable[str] | None = None,
) -> Graph:
    """The graph of ``configs``; with ``instances`` (and the triggers that
    ``fired``) each node carries the session's state."""
    with_session = instances is not None
    by_task: dict[str, list[str]] = {}
    for inst in instances or ():
        by_task.setdefault(inst.config.name, []).append(inst.status)
    fired_set = set(fired or ())
    graph = Graph()
    for name in sorted(configs):
        label = name
        state = None
        if with_session:
            statuses = by_task.get(name, [])
            state = task_state(statuses)
            if statuses:
                counts = {s: statuses.count(s) for s in _PRECEDENCE if s in statuses}
                label += "\n" + ", ".join(f"{n} {s}" for s, n in counts.items())
            else:
                label += "\nno instance"
        graph.nodes[name] = Node(name, "task", state, label)
    for name in sorted(configs):
        config = configs[name]

        def trigger_node(trigger: str) -> None:
            if trigger not in graph.nodes:
                state = None
                if with_session:
                    state = "fired" if trigger in fired_set else "not fired"
                graph.nodes[trigger] = Node(trigger, "trigger", state, trigger)

        def kind_of(trigger: str, unless: bool, config: TaskConfig = config) -> str:
            if unless:
                return UNLESS
            if trigger == config.and_every:
                return EVERY
            return CASCADE if trigger in configs else AFTER

        for trigger in sorted(config.after_rule.plain | config.unless_rule.plain):
            trigger_node(trigger)
            graph.edges.append(
                (trigger, name, kind_of(trigger, trigger in config.unless_rule.plain))
            )
            if trigger in config.conditions:
                graph.conditions[(trigger, name)] = config.conditions[trigger]
        for unless, rule in ((False, config.after_rule), (True, config.unless_rule)):
            for i, group in enumerate(rule.groups):
                part = "unless" if unless else "after"
                node = GROUP_SEP.join((name, part, str(i)))
                label = "any of" if group.kind == "anyOf" else f"{group.need} of {len(group.of)}"
                state = None
                if with_session:
                    state = "fired" if group.met(fired_set) else "not fired"
                graph.nodes[node] = Node(node, "group", state, label)
                for member in group.of:
                    trigger_node(member)
                    graph.edges.append((member, node, kind_of(member, unless)))
                    if member in config.conditions:
                        graph.conditions[(member, node)] = config.conditions[member]
                graph.edges.append((node, name, UNLESS if unless else AFTER))
        deadline = deadline_of(config)
        if deadline is not None:
            trigger_node(deadline["fire"])
            graph.edges.append((name, deadline["fire"], DEADLINE))
            graph.deadlines[(name, deadline["fire"])] = float(deadline["seconds"])
    return graph


def duration(seconds: float) -> str:
    """``172800`` -> ``'2d'``, ``5400`` -> ``'1h30m'``, ``90`` -> ``'1m30s'``."""
    left, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or f"{seconds:g}s"


def _ids(graph: Graph) -> dict[str, str]:
    # Names may hold any character; renderers get safe ids and quoted labels.
    return {name: f"n{i}" for i, name in enumerate(graph.nodes)}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def to_mermaid(graph: Graph) -> str:
    """Mermaid ``flowchart`` source."""
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for name, node in graph.nodes.items():
        label = _mermaid_text(node.label or name)
        shape = {"trigger": f'(["{label}"])', "group": f'{{{{"{label}"}}}}'}.get(
            node.kind, f'["{label}"]'
        )
        lines.append(f"    {ids[name]}{shape}")
    arrows = {AFTER: "-->", EVERY: "==>", UNLESS: "-.->", CASCADE: "-->", DEADLINE: "-.->"}
    for source, target, kind in graph.edges:
        text = graph.edge_label(source, target, kind)
        if text and (source, target) in graph.conditions:
            text = f'"{_mermaid_text(text).replace("|", "#124;")}"'
        arrow = f"{arrows[kind]}|{text}|" if text else arrows[kind]
        lines.append(f"    {ids[source]} {arrow} {ids[target]}")
    states = sorted({n.state for n in graph.nodes.values() if n.state})
    for state in states:
        fill, stroke = COLOURS[state]
        css = state.replace(" ", "_")
        lines.append(f"    classDef {css} fill:{fill},stroke:{stroke},color:#212529")
        members = [ids[n] for n, node in graph.nodes.items() if node.state == state]
        lines.append(f"    class {','.join(members)} {css}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    # A JSON string is a valid DOT string; "\n" centres the next line.
    return json.dumps(text, ensure_ascii=False)


def to_dot(graph: Graph, name: str = "workflow") -> str:
    """Graphviz DOT source."""
    ids = _ids(graph)
    lines = [
        f"digraph {_dot_text(name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
    ]
    for node_name, node in graph.nodes.items():
        attrs = [f"label={_dot_text(node.label or node_name)}"]
        attrs.append(
            {"trigger": "shape=ellipse", "group": "shape=hexagon"}.get(node.kind, "shape=box")
        )
        if node.state:
            fill, stroke = COLOURS[node.state]
            attrs += ["style=filled", f'fillcolor="{fill}"', f'color="{stroke}"']
        lines.append(f"    {ids[node_name]} [{', '.join(attrs)}];")
    styles = {
        AFTER: [],
        EVERY: ["style=bold", "penwidth=2.5"],
        UNLESS: ["style=dashed", "arrowhead=tee"],
        CASCADE: [],
        DEADLINE: ["style=dotted"],
    }
    for source, target, kind in graph.edges:
        attrs = list(styles[kind])
        text = graph.edge_label(source, target, kind)
        if text:
            attrs.append(f"label={_dot_text(text)}")
        joined = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {ids[source]} -> {ids[target]}{joined};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(graph: Graph) -> dict[str, Any]:
    """Nodes and edges as plain data."""
    return {
        "nodes": [
            {"name": n.name, "kind": n.kind, "state": n.state, "label": n.label}
            for n in graph.nodes.values()
        ],
        "edges": [
            {"source": s, "target": t, "kind": k, "condition": graph.conditions.get((s, t))}
            for s, t, k in graph.edges
        ],
    }


def can_never_run(configs: Mapping[str, TaskConfig]) -> set[str]:
    """Tasks whose ``after`` can never be met: every trigger that is not a
    task's name may fire, a task's name fires once that task can run, and
    a group needs only ``need`` members that can fire."""
    fireable = {t for cfg in configs.values() for t in cfg.after if t not in configs}
    # A task is checked again only when a cascade it mentions becomes able to fire.
    waiting_on: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        for trigger in cfg.after:
            if trigger in configs:
                waiting_on.setdefault(trigger, []).append(name)
    runs: set[str] = set()
    todo = [name for name, cfg in configs.items() if cfg.after_rule.met(fireable)]
    while todo:
        name = todo.pop()
        if name in runs:
            continue
        runs.add(name)
        fireable.add(name)
        todo += [
            other
            for other in waiting_on.get(name, ())
            if other not in runs and configs[other].after_rule.met(fireable)
        ]
    return set(configs) - runs


def find_cascade_cycle(configs: Mapping[str, TaskConfig]) -> list[str] | None:
    """Tasks that wait on each other's cascades in a ring can never run.

    Returns the ring (first task repeated at the end) or ``None``. With
    groups, a ring is reported only when it blocks: a task in an ``anyOf``
    with a trigger outside the ring can still run.
    """
    stuck = can_never_run(configs)
    if not stuck:
        return None
    edges = {name: sorted(t for t in configs[name].after if t in stuck) for name in stuck}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None
