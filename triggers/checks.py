"""Django system checks for the ``TRIGGERS`` setting (filled in by the Django
integration work)."""
