"""``manage.py triggers_resend UID [INSTANCE ...]``: send stuck instances to
their runner again."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.management.base import CommandParser

from ..base import TriggersCommand


class Command(TriggersCommand):
    help = (
        "Send task instances to their runner again: the named ones, or every stuck one "
        "(scheduled or running longer than --older-than seconds with no live worker lease), "
        "and every instance that is ready but was never sent (the broker was down when it "
        "became ready), whatever its age. A duplicate message is "
        "harmless: an instance runs only under its worker's claim, and a finished one "
        "never runs again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "instances", nargs="*", metavar="INSTANCE", help="instance names (default: stuck ones)"
        )
        parser.add_argument(
            "--older-than",
            type=float,
            metavar="SECONDS",
            help="age that makes an instance stuck (default TRIGGERS['STUCK_AFTER'])",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be re-sent, send nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        manager = self.get_manager(options)
        uid = manager.storage.uid
        names = list(options["instances"])
        if not names:
            stuck = self.call(lambda: manager.find_stuck_instances(options["older_than"]))
            names = [inst.name for inst in stuck]
            # An instance that is ready but was never sent (its dispatch failed)
            # waits for nobody: it is re-sent whatever its age.
            instances = self.call(lambda: manager.storage.instances)
            names += sorted(n for n, i in instances.items() if i.can_run and n not in names)
        sent = []
        for name in names:
            if options["dry_run"]:
                inst = self.call(partial(manager.storage.__getitem__, name))
            else:
                inst = self.call(partial(manager.resend_instance, name))
            sent.append({"instance": inst.name, "status": inst.status})
        if options["json"]:
            self.write_json({"uid": uid, "dry_run": options["dry_run"], "resent": sent})
            return
        if not sent:
            self.stdout.write(f"Nothing to re-send in session {uid!r}")
        verb = "Would re-send" if options["dry_run"] else "Re-sent"
        for entry in sent:
            self.stdout.write(f"{verb} {entry['instance']} ({entry['status']}) in {uid!r}")
