"""Sphinx configuration for the triggers documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "examples"))

# autodoc imports the package, and parts of it import Django; a minimal
# configuration is enough (nothing connects to Redis while building).
import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "triggers"],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        USE_TZ=True,
    )
    django.setup()

import triggers  # noqa: E402

project = "triggers"
author = "The triggers developers"
copyright = "the triggers developers"
release = triggers.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "examples/**/__pycache__"]
templates_path: list[str] = []
html_static_path = ["_static"]
# Furo: a content column wide enough for 100-column code, which scrolls
# rather than being cut off when a line is longer still, and a dark mode.
html_theme = os.environ.get("TRIGGERS_DOCS_THEME", "furo")
html_title = f"triggers {release}"
html_css_files = ["triggers.css"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Celery's Task has hundreds of attributes; inherited members would drown ours.
autodoc_inherit_docstrings = False

# The docs' Python examples are run by tests/test_docs.py, not by Sphinx.
highlight_language = "python3"
