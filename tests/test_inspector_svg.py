"""The inspector's workflow picture: SVG drawn in Python, no Graphviz."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from triggers.graph import COLOURS, build_graph
from triggers.inspector.svg import to_svg
from triggers.types import TaskConfig, TaskInstance, validate_configuration

WORKFLOW = Path(__file__).resolve().parent.parent / "docs/examples/questionnaire/workflow.json"
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def nodes(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("data-name")}


def test_every_task_and_trigger_of_a_workflow_is_drawn_once():
    configs = validate_configuration(json.loads(WORKFLOW.read_text()))
    root = parse(to_svg(build_graph(configs), title="questionnaire"))
    names = set(configs)
    for config in configs.values():
        names |= config.after | config.unless
    assert set(nodes(root)) == names
    # edges keep their kinds: after, every (thick), unless (dashed), cascade
    kinds = {g.get("class") for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "")}
    assert kinds == {"edge edge-after", "edge edge-every", "edge edge-unless", "edge edge-cascade"}
    dashed = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert dashed


def test_nodes_take_the_status_colours_of_a_session():
    configs = {"t_a": TaskConfig("t_a", ["go"], "x.A"), "t_b": TaskConfig("t_b", ["t_a"], "x.B")}
    failed = TaskInstance("t_a#0", configs["t_a"], TaskInstance.STATUS_FAILED)
    root = parse(to_svg(build_graph(configs, [failed], ["go"])))
    drawn = nodes(root)
    rect = drawn["t_a"].find(f"{SVG}rect")
    assert (rect.get("fill"), rect.get("stroke")) == COLOURS["failed"]
    assert "state-none" in drawn["t_b"].get("class")
    assert "state-fired" in drawn["go"].get("class")
    # a source trigger sits left of its task, the cascade's target right of it
    x = {n: float(g.find(f"{SVG}rect").get("x")) for n, g in drawn.items()}
    assert x["go"] < x["t_a"] < x["t_b"]


def test_names_are_escaped_and_links_added():
    configs = {'t_<b>&"': TaskConfig('t_<b>&"', ["a<b"], "x.A")}
    svg = to_svg(
        build_graph(configs), link=lambda name: f"#task-{name}" if name in configs else None
    )
    root = parse(svg)  # well-formed whatever the names hold
    assert set(nodes(root)) == {'t_<b>&"', "a<b"}
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert links == ['#task-t_<b>&"']


def test_a_cycle_through_unless_is_drawn():
    configs = {
        "t_a": TaskConfig("t_a", ["go"], "x.A", unless=["t_b"]),
        "t_b": TaskConfig("t_b", ["t_a"], "x.B"),
    }
    root = parse(to_svg(build_graph(configs)))
    assert set(nodes(root)) == {"t_a", "t_b", "go"}


def test_an_empty_workflow_is_a_small_picture():
    assert "(no tasks)" in to_svg(build_graph({}))
