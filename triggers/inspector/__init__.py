"""The web inspector: session list and session pages in the Django admin's
style (see :mod:`triggers.urls` and docs/inspector.rst)."""
