"""Test suite and throwaway Django project for ``triggers``."""

# The standard Django + Celery wiring: importing the project loads its Celery
# app, so it becomes the current app and tasks sent from tests go to the test
# broker, not Celery's default one.
from tests.celery_app import app as celery_app

__all__ = ["celery_app"]
