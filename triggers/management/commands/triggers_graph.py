"""``manage.py triggers_graph WORKFLOW``: draw a workflow."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...graph import build_graph, to_dot, to_json, to_mermaid
from ...shortcuts import get_trigger_manager
from ...types import TaskConfig
from ...workflows import load_workflow, read_workflow_file, validate_workflow
from ..base import EXIT_USAGE, TriggersCommand


class Command(TriggersCommand):
    help = (
        "Print a workflow as a Mermaid or Graphviz graph: triggers feed tasks, tasks cascade "
        "into the tasks waiting on them; andEvery edges are thick ('every'), unless edges "
        "dashed, anyOf/atLeast groups are nodes of their own ('any of', '2 of 3') and if "
        "conditions label their trigger's edge. With --session, tasks are coloured by their "
        "instances' status and triggers by whether they fired. Render with mermaid.live or "
        "`dot -Tsvg`."
    )
    takes_uid = False

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "workflow",
            nargs="?",
            help="a workflow name from TRIGGERS['WORKFLOWS'] or the path of a .json file; "
            "default: the configuration of the --session",
        )
        parser.add_argument("--session", metavar="UID", help="colour nodes by this session")
        parser.add_argument(
            "--format",
            choices=("mermaid", "dot", "json"),
            default="mermaid",
            help="output format (default mermaid)",
        )

    def _configs(self, workflow: str) -> dict[str, TaskConfig]:
        if workflow.endswith(".json") or os.sep in workflow:
            return self.call(lambda: validate_workflow(read_workflow_file(workflow), workflow))
        return self.call(lambda: load_workflow(workflow))

    def handle(self, *args: Any, **options: Any) -> None:
        workflow, uid = options["workflow"], options["session"]
        if not workflow and not uid:
            raise CommandError("give a WORKFLOW, a --session, or both", returncode=EXIT_USAGE)
        instances = fired = None
        configs: dict[str, TaskConfig] = {}
        if uid:
            manager = get_trigger_manager(uid)
            self.require_session(manager)
            storage = manager.storage
            configs = self.call(lambda: storage.tasks)
            instances = list(self.call(lambda: storage.instances).values())
            fired = list(self.call(lambda: storage.latest_kwargs))
        if workflow:
            configs = self._configs(workflow)
        graph = build_graph(configs, instances, fired)
        if options["json"] or options["format"] == "json":
            self.write_json(to_json(graph))
        elif options["format"] == "dot":
            self.stdout.write(to_dot(graph, workflow or uid or "workflow"), ending="")
        else:
            self.stdout.write(to_mermaid(graph), ending="")
