"""``manage.py triggers_validate [FILE.json ...]``: validate workflows in CI."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...checks import WORKFLOW_CHECK_IDS, problem_text
from ...exceptions import ConfigurationError
from ...workflows import Problem, configured_workflows, find_problems
from ..base import EXIT_REFUSED, TriggersCommand


class Command(TriggersCommand):
    help = (
        "Validate workflow files, or every workflow in TRIGGERS['WORKFLOWS'] when no file "
        "is given, with the same rules as update_configuration plus a check that each "
        "'run' names a registered TriggerTask. Exits 1 if any workflow has an error."
    )
    takes_uid = False
    # The command reports bad workflows itself, with every problem of every
    # workflow; Django's system checks would stop it first with their own
    # SystemCheckError for the very workflows it is asked to validate.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("files", nargs="*", metavar="FILE.json", help="workflow files")
        parser.add_argument(
            "--no-check-tasks",
            action="store_true",
            help="do not import task modules to check that 'run' names a registered TriggerTask",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sources: dict[str, Any]
        if options["files"]:
            sources = {path: path for path in options["files"]}
        else:
            try:
                sources = dict(configured_workflows())
            except ConfigurationError as exc:
                raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        check_tasks = not options["no_check_tasks"]
        results = {
            name: find_problems(source, name, check_tasks=check_tasks)
            for name, source in sources.items()
        }
        failed = sorted(name for name, found in results.items() if any(p.is_error for p in found))
        if options["json"]:
            self.write_json(
                {
                    "valid": not failed,
                    "workflows": {
                        name: [dict(p.as_dict(), id=WORKFLOW_CHECK_IDS[p.kind]) for p in found]
                        for name, found in results.items()
                    },
                }
            )
        else:
            self._write_text(results)
        if failed:
            noun = "workflow is" if len(results) == 1 else "workflows are"
            raise CommandError(
                f"{len(failed)} of {len(results)} {noun} invalid: {', '.join(failed)}",
                returncode=EXIT_REFUSED,
            )

    def _write_text(self, results: dict[str, list[Problem]]) -> None:
        if not results:
            self.stdout.write("No workflows declared in TRIGGERS['WORKFLOWS'].")
        for name, found in results.items():
            if not found:
                self.stdout.write(self.style.SUCCESS(f"{name}: OK"))
                continue
            self.stdout.write(f"{name}:")
            for problem in found:
                label = "ERROR" if problem.is_error else "WARNING"
                style = self.style.ERROR if problem.is_error else self.style.WARNING
                line = f"  {label} [{WORKFLOW_CHECK_IDS[problem.kind]}] {problem_text(problem)}"
                self.stdout.write(style(line))
                if problem.hint:
                    self.stdout.write(f"      HINT: {problem.hint}")
