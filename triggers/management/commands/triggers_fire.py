"""``manage.py triggers_fire UID TRIGGER``: fire a trigger by hand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...exceptions import DispatchError
from ...shortcuts import start_session
from ..base import EXIT_REFUSED, TriggersCommand


class Command(TriggersCommand):
    help = (
        "Fire a trigger for a session, exactly as the application would, and list the "
        "instances it scheduled. Refuses sessions with no state unless --workflow starts "
        "one or --force is given (a mistyped UID would otherwise create a new session)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("trigger", help="trigger name")
        parser.add_argument(
            "--kwargs", metavar="JSON", help="trigger kwargs as a JSON object, e.g. '{\"page\": 2}'"
        )
        parser.add_argument(
            "--workflow",
            metavar="NAME",
            help="first start the session on this workflow from TRIGGERS['WORKFLOWS']",
        )
        parser.add_argument(
            "--force", action="store_true", help="fire even into a session that has no state"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kwargs = self.json_object(options["kwargs"], "--kwargs")
        if options["workflow"]:
            manager = self.call(
                lambda: start_session(
                    options["uid"],
                    options["workflow"],
                    manager=options["manager"],
                    storage=options["storage"],
                )
            )
        else:
            manager = self.get_manager(options)
            if not options["force"]:
                self.require_session(manager)
        trigger = options["trigger"]
        try:
            scheduled = self.call(lambda: manager.fire(trigger, kwargs))
        except CommandError as error:
            if isinstance(error.__cause__, DispatchError):
                failures = sorted(error.__cause__.failures)
                raise CommandError(
                    f"{error} (the trigger was recorded; resend {', '.join(failures)} once "
                    "the broker is back)",
                    returncode=EXIT_REFUSED,
                ) from error.__cause__
            raise
        names = [inst.name for inst in scheduled]
        if options["json"]:
            self.write_json(
                {
                    "uid": manager.storage.uid,
                    "trigger": trigger,
                    "kwargs": kwargs or {},
                    "scheduled": names,
                }
            )
            return
        what = f"scheduled {', '.join(names)}" if names else "scheduled nothing"
        self.stdout.write(f"Fired {trigger!r} in session {manager.storage.uid!r}: {what}")
