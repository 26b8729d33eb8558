"""The shipped migrations match the models: a user's ``makemigrations`` must
never generate a migration inside the ``triggers`` app."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db(databases="__all__")
def test_the_models_need_no_new_migration() -> None:
    out = StringIO()
    # --check exits non-zero (SystemExit) when a migration would be written.
    call_command("makemigrations", "triggers", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
