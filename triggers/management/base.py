"""What the ``triggers_*`` management commands share: session arguments,
JSON options and output, and turning what the manager refuses into a
:class:`~django.core.management.CommandError` with a clear message.

Exit codes: 0 done, 1 refused (the manager or the session said no: unknown
instance, wrong status, invalid trigger, lock timeout, dispatch failure...),
2 bad usage (unparsable ``--kwargs``/``--result`` JSON and argparse errors).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..exceptions import TriggersError
from ..manager import TriggerManager
from ..shortcuts import get_trigger_manager

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_USAGE = 2

EPILOG = (
    "Exit status: 0 on success, 1 when the request is refused (unknown session or "
    "instance, wrong status, invalid trigger, lock timeout, broker down), 2 on bad usage."
)


class TriggersCommand(BaseCommand):
    """Base class: ``uid`` argument, ``--manager``/``--storage`` and ``--json``."""

    takes_uid = True

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("epilog", EPILOG)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        if self.takes_uid:
            parser.add_argument("uid", help="session UID")
            parser.add_argument(
                "--manager",
                help="trigger manager registry key or dotted path (default TRIGGERS['MANAGER'])",
            )
            parser.add_argument(
                "--storage",
                help="storage backend registry key or dotted path (default TRIGGERS['STORAGE'])",
            )
        parser.add_argument(
            "--json", action="store_true", help="print machine-readable JSON instead of text"
        )

    def get_manager(self, options: dict[str, Any]) -> TriggerManager:
        with self.refusals():
            return get_trigger_manager(
                options["uid"], manager=options.get("manager"), storage=options.get("storage")
            )

    @contextmanager
    def refusals(self) -> Iterator[None]:
        """Report what the library refuses as a CommandError (exit 1)."""
        try:
            yield
        except CommandError:
            raise
        except TriggersError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        except KeyError as exc:  # registries: unknown manager/storage key
            message = str(exc.args[0]) if exc.args else repr(exc)
            raise CommandError(message, returncode=EXIT_REFUSED) from exc
        except (ValueError, TypeError) as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc

    def call(self, operation: Callable[[], T]) -> T:
        with self.refusals():
            return operation()

    @staticmethod
    def json_object(value: str | None, option: str) -> dict[str, Any] | None:
        """Parse a ``--kwargs``-style option: a JSON object, or None if absent."""
        if value is None:
            return None
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{option} is not valid JSON ({exc.msg} at column {exc.colno}): {value}",
                returncode=EXIT_USAGE,
            ) from None
        if not isinstance(data, dict):
            raise CommandError(
                f"{option} must be a JSON object, not {type(data).__name__}: {value}",
                returncode=EXIT_USAGE,
            )
        return data

    def write_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str))

    def require_session(self, manager: TriggerManager) -> None:
        """Refuse to act on a session that holds no state (usually a typo)."""
        storage = manager.storage
        with self.refusals():
            empty = not storage.tasks and not storage.latest_kwargs
        if empty:
            raise CommandError(
                f"session {storage.uid!r} has no state (no configuration, no fired triggers); "
                "check the UID",
                returncode=EXIT_REFUSED,
            )
