"""``manage.py triggers_skip UID INSTANCE``: give up on a failed instance."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ..base import EXIT_USAGE, TriggersCommand


class Command(TriggersCommand):
    help = (
        "Mark a failed task instance skipped (resolved without running). With --cascade, "
        "also fire the task's name as if it had finished, with --result as its kwargs. "
        "Refuses instances that did not fail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("instance", help="failed instance name, e.g. t_importSubject#0")
        parser.add_argument(
            "--cascade",
            action="store_true",
            help="fire the task's cascade so the tasks waiting on it go on",
        )
        parser.add_argument(
            "--result", metavar="JSON", help="kwargs of the cascade (needs --cascade)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = self.json_object(options["result"], "--result")
        if result is not None and not options["cascade"]:
            raise CommandError(
                "--result is the cascade's kwargs; it needs --cascade", returncode=EXIT_USAGE
            )
        manager = self.get_manager(options)
        skipped = self.call(
            lambda: manager.skip_failed_instance(options["instance"], options["cascade"], result)
        )
        cascade = skipped.config.name if options["cascade"] else None
        if options["json"]:
            self.write_json(
                {
                    "uid": manager.storage.uid,
                    "skipped": skipped.name,
                    "status": skipped.status,
                    "cascade": cascade,
                    "result": result if cascade else None,
                }
            )
            return
        text = f"Skipped {skipped.name} in session {manager.storage.uid!r}"
        if cascade:
            text += f" and fired its cascade {cascade!r}"
        self.stdout.write(text)
