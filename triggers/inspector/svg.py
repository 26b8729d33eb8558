"""A workflow graph (:func:`triggers.graph.build_graph`) as standalone SVG.

Drawn here, in Python, so the inspector needs no JavaScript, no CDN and no
Graphviz: a layered layout, left to right. Triggers that no task produces sit
in the first column; each task sits one column right of the furthest node
that feeds it; within a column, nodes are ordered by the average position of
their neighbours (a few sweeps of the barycentre heuristic). Nodes take the
status colours of :data:`triggers.graph.COLOURS`; edges keep the graph's
kinds (``after`` solid, ``every`` thick, ``unless`` dashed, ``cascade``
solid and labelled, ``deadline`` dotted and labelled with its delay); a
group (``anyOf``/``atLeast``) is a small dashed node, and an edge whose
trigger has an ``if`` condition is labelled with it.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from ..graph import AFTER, CASCADE, COLOURS, DEADLINE, EVERY, UNLESS, Graph

__all__ = ["to_svg"]

FONT_SIZE = 12
CHAR_WIDTH = 7.2  # average advance of a 12px sans-serif character
LINE_HEIGHT = 16
PAD_X, PAD_Y = 10, 6
COLUMN_GAP = 70
ROW_GAP = 18
MARGIN = 12
SWEEPS = 4


def _columns(graph: Graph) -> dict[str, int]:
    """Column of each node: longest path from a source, ignoring edges that
    close a cycle (an ``unless`` may point back upstream); then sources move
    right, next to their first target."""
    incoming: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target, _ in graph.edges:
        incoming[target].append(source)
    column: dict[str, int] = {}
    visiting: set[str] = set()

    def place(name: str) -> int:
        if name in column:
            return column[name]
        if name in visiting:
            return -1  # back edge: ignore
        visiting.add(name)
        column[name] = 1 + max((place(src) for src in incoming[name]), default=-1)
        visiting.discard(name)
        return column[name]

    for name in graph.nodes:
        place(name)
    # A trigger nobody produces sits just left of the first task it feeds,
    # not in column 0, so its edges do not run behind other nodes.
    outgoing: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target, _ in graph.edges:
        outgoing[source].append(target)
    for name, node in graph.nodes.items():
        if not incoming[name] and outgoing[name] and node.kind == "trigger":
            column[name] = max(0, min(column[t] for t in outgoing[name]) - 1)
    return column


def _order(graph: Graph, column: dict[str, int]) -> list[list[str]]:
    layers: list[list[str]] = [[] for _ in range(max(column.values(), default=-1) + 1)]
    for name in graph.nodes:  # build_graph lists tasks, then triggers, sorted
        layers[column[name]].append(name)
    neighbours: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target, _ in graph.edges:
        neighbours[source].append(target)
        neighbours[target].append(source)
    for sweep in range(SWEEPS):
        indices = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for i in indices:
            position = {n: p for layer in layers for p, n in enumerate(layer)}

            def weight(name: str, i: int = i, position: dict[str, int] = position) -> float:
                near = [position[n] for n in neighbours[name] if abs(column[n] - i) == 1]
                return sum(near) / len(near) if near else position[name]

            layers[i].sort(key=weight)
    return layers


def _size(lines: list[str]) -> tuple[float, float]:
    width = max(len(line) for line in lines) * CHAR_WIDTH + 2 * PAD_X
    return max(width, 60.0), len(lines) * LINE_HEIGHT + 2 * PAD_Y


def to_svg(
    graph: Graph,
    *,
    title: str = "workflow",
    link: Callable[[str], str | None] | None = None,
) -> str:
    """SVG markup of ``graph``; ``link(node name)`` may give a URL for a node
    (the inspector links task nodes to their rows)."""
    if not graph.nodes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="30" role="img">'
            '<text x="4" y="20" font-size="12">(no tasks)</text></svg>'
        )
    column = _columns(graph)
    layers = _order(graph, column)
    labels = {n: (node.label or n).split("\n") for n, node in graph.nodes.items()}
    sizes = {n: _size(labels[n]) for n in graph.nodes}
    widths = [max(sizes[n][0] for n in layer) if layer else 0 for layer in layers]
    heights = [
        sum(sizes[n][1] for n in layer) + ROW_GAP * max(len(layer) - 1, 0) for layer in layers
    ]
    total_height = max(heights) + 2 * MARGIN
    box: dict[str, tuple[float, float, float, float]] = {}
    x = float(MARGIN)
    for i, layer in enumerate(layers):
        y = MARGIN + (total_height - 2 * MARGIN - heights[i]) / 2
        for name in layer:
            w, h = sizes[name]
            box[name] = (x + (widths[i] - w) / 2, y, w, h)
            y += h + ROW_GAP
        x += widths[i] + COLUMN_GAP
    total_width = x - COLUMN_GAP + MARGIN

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="triggers-graph" '
        f'width="{total_width:.0f}" height="{total_height:.0f}" '
        f'viewBox="0 0 {total_width:.0f} {total_height:.0f}" role="img" '
        f'aria-label={quoteattr(title)} font-family="sans-serif" font-size="{FONT_SIZE}">',
        f"<title>{escape(title)}</title>",
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="#495057"/></marker>'
        '<marker id="tee" viewBox="0 0 4 10" refX="4" refY="5" markerWidth="4" '
        'markerHeight="10" orient="auto"><path d="M2,0V10" stroke="#b02a37" '
        'stroke-width="2"/></marker>'
        "</defs>",
    ]
    for source, target, kind in graph.edges:
        out.append(_edge(box[source], box[target], kind, graph.edge_label(source, target, kind)))
    for name, node in graph.nodes.items():
        out.append(_node(name, node.kind, node.state, labels[name], box[name], link))
    out.append("</svg>")
    return "\n".join(out)


def _edge(
    src: tuple[float, float, float, float],
    dst: tuple[float, float, float, float],
    kind: str,
    label: str = "",
) -> str:
    x1, y1 = src[0] + src[2], src[1] + src[3] / 2
    x2, y2 = dst[0], dst[1] + dst[3] / 2
    if x2 <= x1:  # an edge back upstream: leave from the bottom, enter from below
        x1, y1 = src[0] + src[2] / 2, src[1] + src[3]
        x2, y2 = dst[0] + dst[2] / 2, dst[1] + dst[3]
        bend = max(y1, y2) + 40
        path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{bend:.1f} {x2:.1f},{bend:.1f} {x2:.1f},{y2:.1f}"
    else:
        mid = (x1 + x2) / 2
        path = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    style = {
        AFTER: 'stroke="#495057" stroke-width="1.3" marker-end="url(#arrow)"',
        CASCADE: 'stroke="#495057" stroke-width="1.3" marker-end="url(#arrow)"',
        EVERY: 'stroke="#495057" stroke-width="3" marker-end="url(#arrow)"',
        UNLESS: 'stroke="#b02a37" stroke-width="1.3" stroke-dasharray="5,4" marker-end="url(#tee)"',
        DEADLINE: 'stroke="#6c757d" stroke-width="1.3" stroke-dasharray="2,3" '
        'marker-end="url(#arrow)"',
    }[kind]
    text = ""
    if label:
        tx, ty = (x1 + x2) / 2, (y1 + y2) / 2 - 4
        text = (
            f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="middle" font-size="10" '
            f'fill="#6c757d">{escape(label)}</text>'
        )
    return f'<g class="edge edge-{kind}"><path d="{path}" fill="none" {style}/>{text}</g>'


def _node(
    name: str,
    kind: str,
    state: str | None,
    lines: list[str],
    box: tuple[float, float, float, float],
    link: Callable[[str], str | None] | None,
) -> str:
    x, y, w, h = box
    fill, stroke = COLOURS[state] if state else ("#ffffff", "#495057")
    radius = h / 2 if kind == "trigger" else 4
    dashes = ' stroke-dasharray="3,2"' if kind == "group" else ""
    css = f"node node-{kind}" + (f" state-{state.replace(' ', '-')}" if state else "")
    parts = [
        f"<g class={quoteattr(css)} data-name={quoteattr(name)}>",
        f"<title>{escape(name)}{' (' + escape(state) + ')' if state else ''}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:.1f}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dashes}/>',
    ]
    for i, line in enumerate(lines):
        ty = y + PAD_Y + LINE_HEIGHT * i + LINE_HEIGHT * 0.75
        weight = ' font-weight="bold"' if i == 0 and kind == "task" else ""
        size = "" if i == 0 else ' font-size="11" fill="#495057"'
        parts.append(
            f'<text x="{x + w / 2:.1f}" y="{ty:.1f}" text-anchor="middle"{weight}{size}>'
            f"{escape(line)}</text>"
        )
    parts.append("</g>")
    body = "".join(parts)
    href = link(name) if link else None
    return f"<a href={quoteattr(href)}>{body}</a>" if href else body
