"""Render the questionnaire workflow as docs/_static/questionnaire.svg.

Run after changing docs/examples/questionnaire/workflow.json (needs Graphviz's
``dot``)::

    .venv/bin/python docs/render_graph.py

The DOT source comes from :mod:`triggers.graph`, the same code behind the
``triggers_graph`` management command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE / "examples" / "questionnaire" / "workflow.json"


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    from triggers.graph import build_graph, to_dot
    from triggers.types import validate_configuration

    dot = to_dot(
        build_graph(validate_configuration(json.loads(WORKFLOW.read_text()))), "questionnaire"
    )
    # Top to bottom and larger type than triggers_graph's defaults: the page
    # column is about 750 px wide, and a left-to-right drawing of a workflow
    # this long would be shrunk until its labels are unreadable.
    dot = dot.replace(
        "rankdir=LR;",
        'rankdir=TB; nodesep=0.3; ranksep=0.5; node [fontsize=17]; '
        'edge [fontname="Helvetica", fontsize=15];',
        1,
    )
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
    ).stdout
    (HERE / "_static" / "questionnaire.svg").write_text(svg)


if __name__ == "__main__":
    main()
