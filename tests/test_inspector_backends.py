"""The inspector on the other storage backends: PostgreSQL through the
database backend. (The Redis and process-local caches are covered in
tests/test_inspector.py.) These tests run without Django's test database:
the permission callable lets anyone in, so no user table is needed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from triggers.runners.threading import ThreadingTaskRunner
from triggers.shortcuts import get_trigger_manager

WORKFLOW = {
    "t_fetch": {"after": ["start"], "run": "tests.inspector_tasks.FlakyTask"},
    "t_report": {"after": ["t_fetch", "approved"], "run": "triggers.testing.PassThruTask"},
}


def anyone(request: Any) -> bool:
    return True


# Every task runs on the threading runner (the shared `threaded` fixture).
pytestmark = pytest.mark.usefixtures("threaded")


@pytest.mark.postgres
def test_the_pages_and_actions_work_on_the_database_backend(settings, unique_uid):
    # Given session state in PostgreSQL (the database storage backend)
    settings.TRIGGERS = dict(
        django_settings.TRIGGERS,
        STORAGE="database",
        STORAGE_OPTIONS={"database": "postgres"},
        INSPECTOR_PERMISSION="tests.test_inspector_backends.anyone",
    )
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    manager.fire("approved")
    manager.fire("start", {"ok": False})
    ThreadingTaskRunner.join_all()
    client = Client()
    page = reverse("triggers:session", args=[unique_uid])
    try:
        # Then its page shows the failed instance
        html = client.get(page).content.decode()
        assert re.search(r'id="inst-t_fetch#0"[^>]*data-status="failed"', html), html
        # And a replay with new kwargs runs the clone and the cascade
        form = {"action": "replay", "instance": "t_fetch#0", "kwargs": '{"start": {"ok": true}}'}
        response = client.post(page, form, follow=True)
        ThreadingTaskRunner.join_all()
        assert "Replayed t_fetch#0 as t_fetch#1" in response.content.decode()
        assert manager.storage["t_fetch#1"].status == "finished"
        assert manager.storage["t_report#0"].status == "finished"
        assert manager.storage["t_fetch#0"].metadata["inspector"]["action"] == "replay"
        # And the session list (the database backend's own index) finds it
        text = client.get(reverse("triggers:sessions"), {"q": unique_uid}).content.decode()
        assert f'href="{page}"' in text
    finally:
        manager.storage.delete()
