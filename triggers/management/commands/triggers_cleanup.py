"""``manage.py triggers_cleanup --resolved-older-than AGE``: retention.

Deletes the sessions nobody has written to for AGE whose work is done (no
task waiting for an instance, no instance unresolved), and with
``--unresolved-older-than`` also any session idle that long. Each deletion
re-checks, under the session's lock, that nothing was written since the
cutoff, so a session that comes back to life while the command runs is kept.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...exceptions import TriggersError
from ...sessions import SessionSummary, delete_session, list_sessions
from ...shortcuts import get_trigger_manager
from ..base import EXIT_REFUSED, EXIT_USAGE, TriggersCommand

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
#: Sessions read per page of the index.
PAGE = 500


def parse_age(value: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds."""
    match = _AGE.match(str(value))
    if match is None:
        raise CommandError(
            f"{option} {value!r} is not an age: use a number with an optional unit "
            "(s, m, h, d, w), e.g. 30d, 12h, 90m or 3600",
            returncode=EXIT_USAGE,
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def describe_age(age: timedelta) -> str:
    seconds = age.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


class Command(TriggersCommand):
    help = (
        "Delete sessions idle longer than --resolved-older-than whose tasks are all "
        "resolved (no task without an instance, no instance unstarted, scheduled, running "
        "or failed), and with --unresolved-older-than any session idle that long. "
        "AGE: 30d, 12h, 90m, 45s, 2w or seconds. --dry-run lists them without deleting."
    )
    takes_uid = False

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--resolved-older-than",
            required=True,
            metavar="AGE",
            help="delete resolved sessions last written longer ago than this",
        )
        parser.add_argument(
            "--unresolved-older-than",
            metavar="AGE",
            help="also delete sessions with unresolved work last written longer ago than this",
        )
        parser.add_argument("--prefix", default="", help="only sessions whose uid starts with this")
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        resolved_age = parse_age(options["resolved_older_than"], "--resolved-older-than")
        unresolved_age = None
        if options["unresolved_older_than"] is not None:
            unresolved_age = parse_age(options["unresolved_older_than"], "--unresolved-older-than")
        now = timezone.now()
        resolved_cut = now - resolved_age
        unresolved_cut = now - unresolved_age if unresolved_age is not None else None
        widest = max(resolved_cut, unresolved_cut) if unresolved_cut else resolved_cut
        dry_run = options["dry_run"]

        deleted: list[dict[str, Any]] = []
        kept_unresolved: list[str] = []
        kept_changed: list[str] = []
        failed: dict[str, str] = {}
        offset = 0
        while True:
            with self.refusals():
                page = list_sessions(
                    prefix=options["prefix"], offset=offset, limit=PAGE, older_than=widest
                )
            gone = 0
            for summary in page:
                try:
                    outcome = self._clean(summary, resolved_cut, unresolved_cut, dry_run)
                except TriggersError as exc:
                    failed[summary.uid] = str(exc)
                    continue
                if outcome is None:
                    kept_unresolved.append(summary.uid)
                elif outcome == "changed":
                    kept_changed.append(summary.uid)
                else:
                    deleted.append(
                        {
                            "uid": summary.uid,
                            "last_activity": summary.last_activity.isoformat(),
                            "reason": outcome,
                        }
                    )
                    gone += 0 if dry_run else 1
                    self._report_one(summary, outcome, dry_run, options["json"])
            if len(page) < PAGE:
                break
            # Deleted sessions leave the index; the rest shift up.
            offset += len(page) - gone

        if options["json"]:
            self.write_json(
                {
                    "dry_run": dry_run,
                    "resolved_older_than": describe_age(resolved_age),
                    "unresolved_older_than": (
                        describe_age(unresolved_age) if unresolved_age is not None else None
                    ),
                    "deleted": deleted,
                    "kept_unresolved": kept_unresolved,
                    "kept_changed": kept_changed,
                    "failed": failed,
                }
            )
        else:
            verb = "Would delete" if dry_run else "Deleted"
            resolved = sum(1 for d in deleted if d["reason"] == "resolved")
            text = (
                f"{verb} {len(deleted)} session{'' if len(deleted) == 1 else 's'}: "
                f"{resolved} resolved and idle longer than {describe_age(resolved_age)}"
            )
            if unresolved_age is not None:
                text += (
                    f", {len(deleted) - resolved} unresolved and idle longer than "
                    f"{describe_age(unresolved_age)}"
                )
            if kept_unresolved:
                text += f"; kept {len(kept_unresolved)} with unresolved work"
            if kept_changed:
                text += f"; kept {len(kept_changed)} written to meanwhile"
            self.stdout.write(text)
        if failed:
            lines = "\n".join(f"  {uid}: {error}" for uid, error in sorted(failed.items()))
            raise CommandError(
                f"{len(failed)} session(s) could not be cleaned up:\n{lines}",
                returncode=EXIT_REFUSED,
            )

    def _clean(
        self,
        summary: SessionSummary,
        resolved_cut: datetime,
        unresolved_cut: datetime | None,
        dry_run: bool,
    ) -> str | None:
        """``'resolved'``/``'unresolved'`` when deleted (or to be), ``None``
        when kept for its unresolved work, ``'changed'`` when written to
        since the listing."""
        if unresolved_cut is not None and summary.last_activity < unresolved_cut:
            reason, cutoff = "unresolved", unresolved_cut
            if summary.last_activity < resolved_cut and self._resolved(summary.uid):
                reason = "resolved"
        elif summary.last_activity < resolved_cut and self._resolved(summary.uid):
            reason, cutoff = "resolved", resolved_cut
        else:
            return None
        if dry_run:
            return reason
        # The check above read the session after the listing; any write since
        # is newer than the cutoff, and delete() refuses it.
        if delete_session(summary.uid, idle_before=cutoff):
            return reason
        # Written to since (kept), or its state had already vanished (evicted,
        # deleted elsewhere) and delete() only dropped its index entry.
        listed = list_sessions(prefix=summary.uid, older_than=None)
        return "changed" if any(s.uid == summary.uid for s in listed) else reason

    @staticmethod
    def _resolved(uid: str) -> bool:
        storage = get_trigger_manager(uid).storage
        return not storage.get_unresolved_tasks() and not storage.get_unresolved_instances()

    def _report_one(
        self, summary: SessionSummary, reason: str, dry_run: bool, as_json: bool
    ) -> None:
        if as_json:
            return
        verb = "Would delete" if dry_run else "Deleted"
        when = summary.last_activity.strftime("%Y-%m-%d %H:%M:%S UTC")
        self.stdout.write(f"{verb} {summary.uid!r} ({reason}, last written {when})")
