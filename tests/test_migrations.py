"""The shipped migrations match the models: a user's ``makemigrations`` must
never generate a migration inside the ``triggers`` app."""

from __future__ import annotations

from django.apps import apps
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState


def test_the_models_need_no_new_migration() -> None:
    # What `makemigrations triggers --check` compares, without a database
    # connection: a test that asked pytest-django for every database would
    # make it set up test copies of all of them for the whole run (the
    # PostgreSQL alias is managed by the database backend's own fixtures).
    loader = MigrationLoader(None, ignore_no_migrations=True)
    detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps))
    changes = detector.changes(graph=loader.graph, trim_to_apps={"triggers"})
    assert changes.get("triggers", []) == [], [str(m.operations) for m in changes["triggers"]]
