import os

from celery import Celery

# Before the app exists: Celery's Django support then makes it the app of
# every thread, web request threads included.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
