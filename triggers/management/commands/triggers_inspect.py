"""``manage.py triggers_inspect UID``: a session as a table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ...inspection import inspect_session, render_session_table
from ..base import TriggersCommand


class Command(TriggersCommand):
    help = (
        "Show a session: every task instance with its status; for unstarted ones the "
        "triggers they still wait on, for failed ones the exception, and instances that "
        "look stuck in scheduled/running, and pending timers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--stuck-after",
            type=float,
            metavar="SECONDS",
            help="report scheduled/running instances older than this as stuck "
            "(default TRIGGERS['STUCK_AFTER'])",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        manager = self.get_manager(options)
        self.require_session(manager)
        report = self.call(lambda: inspect_session(manager, options["stuck_after"]))
        if options["json"]:
            self.write_json(report)
        else:
            self.stdout.write(render_session_table(report))
