"""Distributed observer pattern for Django + Celery: fire named triggers for a
session from any process, run Celery tasks once the right set has fired."""

__version__ = "0.1.0"
