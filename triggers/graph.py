"""A workflow as a graph: triggers feed tasks, tasks cascade into the tasks
that wait on them. Rendered as Mermaid (GitHub, Sphinx, mermaid.live) or
Graphviz DOT; with a session's instances, task nodes are coloured by status.

Edges: ``after`` is a solid arrow, ``andEvery`` a thick arrow labelled
"every", ``unless`` a dashed arrow labelled "unless", and a cascade (a task
whose name another task waits on) a solid arrow labelled "cascade".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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

AFTER, EVERY, UNLESS, CASCADE = "after", "every", "unless", "cascade"

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


@dataclass
class Node:
    name: str
    kind: str  # "trigger" or "task"
    state: str | None = None  # a status, "none", "fired" or "not fired"; None without a session
    label: str = ""


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, kind)


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
        for trigger in sorted(config.after | config.unless):
            if trigger not in graph.nodes:
                state = None
                if with_session:
                    state = "fired" if trigger in fired_set else "not fired"
                graph.nodes[trigger] = Node(trigger, "trigger", state, trigger)
            if trigger in config.unless:
                kind = UNLESS
            elif trigger == config.and_every:
                kind = EVERY
            elif trigger in configs:
                kind = CASCADE
            else:
                kind = AFTER
            graph.edges.append((trigger, name, kind))
    return graph


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
        shape = f'(["{label}"])' if node.kind == "trigger" else f'["{label}"]'
        lines.append(f"    {ids[name]}{shape}")
    arrows = {
        AFTER: "-->",
        EVERY: "==>|every|",
        UNLESS: "-.->|unless|",
        CASCADE: "-->|cascade|",
    }
    for source, target, kind in graph.edges:
        lines.append(f"    {ids[source]} {arrows[kind]} {ids[target]}")
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
        attrs.append("shape=ellipse" if node.kind == "trigger" else "shape=box")
        if node.state:
            fill, stroke = COLOURS[node.state]
            attrs += ["style=filled", f'fillcolor="{fill}"', f'color="{stroke}"']
        lines.append(f"    {ids[node_name]} [{', '.join(attrs)}];")
    styles = {
        AFTER: "",
        EVERY: ' [style=bold, penwidth=2.5, label="every"]',
        UNLESS: ' [style=dashed, arrowhead=tee, label="unless"]',
        CASCADE: ' [label="cascade"]',
    }
    for source, target, kind in graph.edges:
        lines.append(f"    {ids[source]} -> {ids[target]}{styles[kind]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(graph: Graph) -> dict[str, Any]:
    """Nodes and edges as plain data."""
    return {
        "nodes": [{"name": n.name, "kind": n.kind, "state": n.state} for n in graph.nodes.values()],
        "edges": [{"source": s, "target": t, "kind": k} for s, t, k in graph.edges],
    }


def find_cascade_cycle(configs: Mapping[str, TaskConfig]) -> list[str] | None:
    """Tasks that wait on each other's cascades in a ring can never run.

    Returns the ring (first task repeated at the end) or ``None``.
    """
    edges = {name: sorted(t for t in cfg.after if t in configs) for name, cfg in configs.items()}
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
