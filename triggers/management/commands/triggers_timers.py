"""``manage.py triggers_timers [--loop]``: apply the timers that are due.

Once by default (for cron), or with ``--loop`` until stopped (SIGINT or
SIGTERM), sweeping every ``--interval`` seconds -- at once again when a
sweep hit ``--limit``; a sweep that fails (Redis or the database away) is
reported on stderr and tried again. Any number may run at once: each timer
fires once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...timers import fire_due_timers
from ..base import EXIT_USAGE, TriggersCommand


class Command(TriggersCommand):
    help = (
        "Apply the timers that are due (fire(..., delay=/at=) and deadline directives) "
        "across all sessions of the configured storage. Once, or with --loop until stopped."
    )
    takes_uid = False

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--loop", action="store_true", help="keep sweeping until stopped")
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="seconds between sweeps with --loop (default 5)",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="apply at most this many timers per sweep"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval, limit = options["interval"], options["limit"]
        if interval <= 0:
            raise CommandError(
                f"--interval must be positive, not {interval}", returncode=EXIT_USAGE
            )
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}", returncode=EXIT_USAGE)
        if not options["loop"]:
            applied = self.call(lambda: fire_due_timers(limit=limit))
            self._report(applied, options["json"])
            return
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        total = 0
        try:
            while not stop.is_set():
                try:
                    applied = fire_due_timers(limit=limit)
                except Exception as exc:  # Redis or the database away: say so, keep going
                    self.stderr.write(f"sweep failed ({type(exc).__name__}: {exc}); retrying")
                    stop.wait(interval)
                    continue
                total += applied
                if applied and options["verbosity"] >= 2:
                    self._report(applied, options["json"])
                if limit is None or applied < limit:
                    stop.wait(interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._report(total, options["json"])

    def _report(self, applied: int, as_json: bool) -> None:
        if as_json:
            self.write_json({"applied": applied})
        else:
            self.stdout.write(f"Applied {applied} due timer{'s' if applied != 1 else ''}.")
