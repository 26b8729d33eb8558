"""Celery tasks used by the test suite (placeholder; the library tests add them)."""
