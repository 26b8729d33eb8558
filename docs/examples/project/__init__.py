# Loads the Celery app whenever Django loads the project, so fire() in a
# view sends tasks through it (manage.py check reports triggers.E010 if not).
from .celery import app as celery_app

__all__ = ["celery_app"]
