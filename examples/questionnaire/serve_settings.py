"""Settings of ``demo.py --serve``: the demo's own, plus what the web
inspector needs (the admin, auth, sessions, messages, static files and a
SQLite database in the run's temporary directory, ``QUESTIONNAIRE_DEMO_DB``).
"""

from __future__ import annotations

import os
import tempfile

from examples.questionnaire.settings import *  # noqa: F403
from examples.questionnaire.settings import INSTALLED_APPS, RUN_ID

# "triggers" above the admin: its admin/index.html links to the inspector.
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "QUESTIONNAIRE_DEMO_DB",
            os.path.join(tempfile.gettempdir(), f"questionnaire-demo-{RUN_ID}.sqlite3"),
        ),
    }
}
ROOT_URLCONF = "examples.questionnaire.urls"
STATIC_URL = "/static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
