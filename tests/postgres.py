"""The test run's own PostgreSQL database (for the database storage backend).

``python -m tests.postgres --check`` exits 0 when the server in
``settings.DATABASES['postgres']`` answers (the Makefile's ensure-postgres
target uses it).
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg
from psycopg import sql

ALIAS = "postgres"


def _server_settings() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.DATABASES[ALIAS])


def _admin_connection(db: dict[str, Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to the server's maintenance database."""
    return psycopg.connect(
        dbname="postgres",
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        host=db["HOST"],
        port=db["PORT"],
        autocommit=True,
        connect_timeout=5,
    )


def create_database() -> str:
    """Create this run's database (empty) and migrate it; returns its name."""
    from django.core.management import call_command

    db = _server_settings()
    with _admin_connection(db) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db["NAME"])))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
        # A throwaway database needs no flush to disk per commit (production
        # keeps PostgreSQL's default; see docs/choosing-storage.rst).
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                sql.Identifier(db["NAME"])
            )
        )
    call_command("migrate", database=ALIAS, verbosity=0, interactive=False)
    return str(db["NAME"])


def drop_database() -> None:
    """Drop this run's database, closing whatever connections still use it."""
    from django.db import connections

    connections[ALIAS].close()
    db = _server_settings()
    with _admin_connection(db) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"]))
        )


def check() -> bool:
    import django

    django.setup()
    try:
        with _admin_connection(_server_settings()) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        print(f"PostgreSQL does not answer: {exc}", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if check() else 1)
    sys.exit("usage: python -m tests.postgres --check")
