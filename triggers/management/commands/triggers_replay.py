"""``manage.py triggers_replay UID INSTANCE``: run a failed instance again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ..base import TriggersCommand


class Command(TriggersCommand):
    help = (
        "Replay a failed task instance: mark it replayed and schedule a clone at once, "
        "with its own kwargs or those given with --kwargs. Refuses instances that did not fail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("instance", help="failed instance name, e.g. t_importSubject#0")
        parser.add_argument(
            "--kwargs",
            metavar="JSON",
            help="replacement kwargs for the clone, keyed by trigger (replaces them wholesale; "
            "'{}' means none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        replacement = self.json_object(options["kwargs"], "--kwargs")
        manager = self.get_manager(options)
        clone = self.call(lambda: manager.replay_failed_instance(options["instance"], replacement))
        if options["json"]:
            self.write_json(
                {
                    "uid": manager.storage.uid,
                    "replayed": options["instance"],
                    "clone": clone.name,
                    "status": clone.status,
                }
            )
            return
        self.stdout.write(
            f"Replayed {options['instance']} in session {manager.storage.uid!r} as "
            f"{clone.name} ({clone.status})"
        )
