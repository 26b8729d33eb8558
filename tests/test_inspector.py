"""The web inspector (SPEC §16) through Django's test client: who may see it,
what the pages show, what each action does, and that bad input changes
nothing. Tasks run on the threading runner, in this process."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from triggers.runners.base import BaseTaskRunner, force_runner
from triggers.runners.threading import ThreadingTaskRunner
from triggers.shortcuts import get_trigger_manager
from triggers.storages.cache import CacheStorageBackend

FLAKY = "tests.inspector_tasks.FlakyTask"
PASS = "triggers.testing.PassThruTask"
WORKFLOW = {
    "t_fetch": {"after": ["start"], "run": FLAKY},
    "t_report": {"after": ["t_fetch", "approved"], "run": PASS},
}

# Tasks run on the threading runner (the shared `threaded` fixture).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("threaded")]


class UnlistedStorage(CacheStorageBackend):
    """A backend without a session index."""

    @classmethod
    def list_sessions(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def count_sessions(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class BrokenRunner(BaseTaskRunner):
    """A runner whose broker is down."""

    name = "broken"

    def run(self, manager: Any, task_instance: Any) -> None:
        raise ConnectionError("broker down")


class TimerStorage(CacheStorageBackend):
    """A backend that keeps timers (the shape of issue 13's is open)."""

    @property
    def timers(self) -> dict[str, Any]:
        return {"reminder": {"fire": "remind", "at": "2030-01-01T00:00:00+00:00"}}


def allow_operators(request: Any) -> bool:
    """An INSPECTOR_PERMISSION callable: users named 'operator', staff or not."""
    return request.user.is_authenticated and request.user.username == "operator"


@pytest.fixture
def failed_session(unique_uid):
    """t_fetch#0 failed; t_report#0 waits on t_fetch (approved fired)."""
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    manager.fire("approved", {"by": "ops"})
    manager.fire("start", {"ok": False})
    ThreadingTaskRunner.join_all()
    assert manager.storage["t_fetch#0"].status == "failed"
    yield manager
    manager.storage.delete()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="pw", is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def page_of(manager) -> str:
    return reverse("triggers:session", args=[manager.storage.uid])


def state(manager) -> dict[str, Any]:
    """Everything an action could change: every instance's record and the
    triggers fired."""
    storage = manager.storage
    return {
        "instances": {n: i.to_record() for n, i in storage.instances.items()},
        "fired": storage.latest_kwargs,
    }


def post(client: Client, manager, **data: str):
    response = client.post(page_of(manager), data, follow=True)
    ThreadingTaskRunner.join_all()
    return response


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# -- who may see it ---------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_admin_login(client, failed_session):
    for url in (reverse("triggers:sessions"), page_of(failed_session)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")
    response = client.post(page_of(failed_session), {"action": "replay", "instance": "t_fetch#0"})
    assert response.status_code == 302
    assert failed_session.storage["t_fetch#0"].status == "failed"


def test_signed_in_users_without_staff_status_get_403(client, django_user_model, failed_session):
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))
    assert client.get(reverse("triggers:sessions")).status_code == 403
    assert client.get(page_of(failed_session)).status_code == 403
    response = client.post(page_of(failed_session), {"action": "replay", "instance": "t_fetch#0"})
    assert response.status_code == 403
    assert failed_session.storage["t_fetch#0"].status == "failed"


def test_a_permission_callable_decides_instead_of_is_staff(
    client, settings, django_user_model, staff, failed_session
):
    # Given INSPECTOR_PERMISSION letting in users named 'operator' only
    settings.TRIGGERS = dict(
        django_settings.TRIGGERS,
        INSPECTOR_PERMISSION="tests.test_inspector.allow_operators",
    )
    # Then a non-staff operator gets in, and a staff user does not
    client.force_login(django_user_model.objects.create_user("operator", password="pw"))
    assert client.get(page_of(failed_session)).status_code == 200
    client.force_login(staff)
    assert client.get(page_of(failed_session)).status_code == 403


def test_forms_without_a_csrf_token_are_refused(staff, failed_session):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    before = state(failed_session)
    response = client.post(page_of(failed_session), {"action": "replay", "instance": "t_fetch#0"})
    assert response.status_code == 403
    assert state(failed_session) == before
    # ... while the page's own forms carry one
    assert 'name="csrfmiddlewaretoken"' in client.get(page_of(failed_session)).content.decode()


def test_a_get_never_runs_an_action(staff_client, failed_session):
    before = state(failed_session)
    response = staff_client.get(
        page_of(failed_session), {"action": "replay", "instance": "t_fetch#0"}
    )
    assert response.status_code == 200
    assert state(failed_session) == before


def test_the_admin_index_links_to_the_inspector(staff_client, settings):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("triggers:sessions")}"' in html
    # ... inside the main column, so the admin's layout holds
    main = re.search(r'<div id="content-main">.*?<div id="content-related">', html, re.S)
    assert 'id="triggers-inspector-link"' in main.group(0)
    # ... and only for users the inspector lets in
    settings.TRIGGERS = dict(
        django_settings.TRIGGERS, INSPECTOR_PERMISSION="tests.test_inspector.allow_operators"
    )
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert 'id="triggers-inspector-link"' not in html


def test_a_permission_path_that_cannot_be_imported_names_the_setting(staff_client, settings):
    settings.TRIGGERS = dict(django_settings.TRIGGERS, INSPECTOR_PERMISSION="tests.nowhere.allow")
    with pytest.raises(ImproperlyConfigured, match=r"INSPECTOR_PERMISSION.*tests\.nowhere"):
        staff_client.get(reverse("triggers:sessions"))


# -- what the pages show ------------------------------------------------------------


def test_the_session_list_finds_sessions_by_uid_prefix_newest_first(
    staff_client, unique_uid, monkeypatch
):
    # Given three sessions under one prefix, changed one after the other
    managers = []
    for n in range(3):
        manager = get_trigger_manager(f"{unique_uid}-{n}")
        manager.update_configuration(WORKFLOW)
        manager.fire("approved")
        managers.append(manager)
    try:
        monkeypatch.setattr("triggers.inspector.views.PAGE_SIZE", 2)
        # When an operator searches for the prefix
        page1 = staff_client.get(reverse("triggers:sessions"), {"q": unique_uid})
        html = page1.content.decode()
        # Then the newest two come first, linked to their pages, and a next page has the third
        shown = re.findall(rf">({re.escape(unique_uid)}-\d)</a>", html)
        assert shown == [f"{unique_uid}-2", f"{unique_uid}-1"]
        assert f'href="{page_of(managers[2])}"' in html
        assert "3 sessions" in html
        page2 = staff_client.get(reverse("triggers:sessions"), {"q": unique_uid, "page": 2})
        assert re.findall(rf">({re.escape(unique_uid)}-\d)</a>", page2.content.decode()) == [
            f"{unique_uid}-0"
        ]
        # And another prefix does not list them
        other = staff_client.get(reverse("triggers:sessions"), {"q": unique_uid + "-x"})
        assert re.findall(rf">({re.escape(unique_uid)}-\d)</a>", other.content.decode()) == []
    finally:
        for manager in managers:
            manager.storage.delete()


def test_open_a_session_by_uid_from_the_list(staff_client, failed_session):
    response = staff_client.get(reverse("triggers:sessions"), {"uid": failed_session.storage.uid})
    assert response.status_code == 302
    assert response["Location"] == page_of(failed_session)


def test_the_session_page_shows_tasks_instances_errors_and_the_graph(staff_client, failed_session):
    response = staff_client.get(page_of(failed_session))
    assert response.status_code == 200
    html = response.content.decode()
    # Admin look
    assert "admin/css/base.css" in html
    assert 'id="user-tools"' in html
    # Tasks and what they wait on
    assert 'id="task-t_fetch"' in html and 'id="task-t_report"' in html
    assert "waiting on 1 of 2: t_fetch" in html
    # The failed instance: status, error type and message, traceback on demand
    row = re.search(r'<tr id="inst-t_fetch#0".*?</tr>', html, re.S)
    assert row, html
    assert 'data-status="failed"' in row.group(0)
    assert "RuntimeError" in row.group(0)
    assert "t_fetch#0: the upstream service said no" in row.group(0)
    assert "<summary>Traceback</summary>" in row.group(0)
    assert "Traceback (most recent call last)" in row.group(0)
    assert 'value="replay"' in row.group(0) and 'value="skip"' in row.group(0)
    # The graph: inline SVG, task nodes coloured by status, no external script
    svg = re.search(r'<svg [^>]*class="triggers-graph".*?</svg>', html, re.S).group(0)
    assert 'data-name="t_fetch"' in svg
    fetch = re.search(r'<g class="node node-task state-failed" data-name="t_fetch">', svg)
    assert fetch, svg
    assert 'class="node node-trigger state-fired" data-name="approved"' in svg
    # ... and nothing fetched from elsewhere (works offline)
    assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == []
    # No timers section: the cache storage keeps none
    assert 'id="timers"' not in html


def test_pending_timers_show_for_storages_that_keep_them(staff_client, settings, failed_session):
    settings.TRIGGERS = dict(django_settings.TRIGGERS, STORAGE="tests.test_inspector.TimerStorage")
    html = staff_client.get(page_of(failed_session)).content.decode()
    assert 'id="timers"' in html
    assert "reminder" in html and "2030-01-01T00:00:00+00:00" in html


def test_an_unknown_session_is_404(staff_client, unique_uid):
    assert staff_client.get(reverse("triggers:session", args=[unique_uid])).status_code == 404
    response = staff_client.post(
        reverse("triggers:session", args=[unique_uid]), {"action": "fire", "trigger": "start"}
    )
    assert response.status_code == 404
    assert not get_trigger_manager(unique_uid).storage.latest_kwargs


def test_the_pages_work_on_a_cache_without_redis(staff_client, settings, unique_uid):
    # Given session state in a process-local cache (no Redis behind it)
    settings.TRIGGERS = dict(django_settings.TRIGGERS, CACHE="locmem")
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    manager.fire("start", {"ok": False})
    ThreadingTaskRunner.join_all()
    try:
        # Then the list finds it, and the session page works
        html = staff_client.get(reverse("triggers:sessions"), {"q": unique_uid}).content.decode()
        assert f'href="{page_of(manager)}"' in html
        response = staff_client.get(page_of(manager))
        assert response.status_code == 200
        assert 'data-status="failed"' in response.content.decode()
        # ... actions included
        post(staff_client, manager, action="skip", instance="t_fetch#0")
        assert manager.storage["t_fetch#0"].status == "skipped"
    finally:
        manager.storage.delete()


def test_a_storage_that_cannot_list_sessions_says_so(staff_client, settings):
    settings.TRIGGERS = dict(
        django_settings.TRIGGERS, STORAGE="tests.test_inspector.UnlistedStorage"
    )
    html = staff_client.get(reverse("triggers:sessions")).content.decode()
    assert "cannot list its sessions" in html
    assert 'name="uid"' in html  # ... and offers to open one by uid


# -- actions ------------------------------------------------------------------------------


def test_replay_with_new_kwargs_runs_the_clone_and_records_who(staff_client, failed_session):
    response = post(
        staff_client,
        failed_session,
        action="replay",
        instance="t_fetch#0",
        kwargs='{"start": {"ok": true}}',
    )
    assert response.status_code == 200
    assert "Replayed t_fetch#0 as t_fetch#1 with new kwargs" in " ".join(messages_of(response))
    storage = failed_session.storage
    original, clone = storage["t_fetch#0"], storage["t_fetch#1"]
    assert original.status == "replayed"
    assert original.metadata["inspector"]["action"] == "replay"
    assert original.metadata["inspector"]["user"] == "ops"
    assert original.metadata["inspector"]["clone"] == "t_fetch#1"
    assert clone.status == "finished" and clone.metadata["result"] == {"fixed": True}
    # ... and its cascade ran the next task
    assert storage["t_report#0"].status == "finished"
    # The page now shows the clone as a replay of the original
    html = response.content.decode()
    assert "replay of <a" in html and "replay by ops" in html


def test_replay_without_kwargs_keeps_them(staff_client, failed_session):
    response = post(staff_client, failed_session, action="replay", instance="t_fetch#0")
    assert "Replayed t_fetch#0 as t_fetch#1 (" in " ".join(messages_of(response))
    assert failed_session.storage["t_fetch#1"].kwargs == {"start": {"ok": False}}
    assert failed_session.storage["t_fetch#1"].status == "failed"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ('{"start": {"ok": true}', "not valid JSON"),
        ('["start"]', "must be a JSON object, not list"),
    ],
)
def test_malformed_replay_kwargs_show_an_error_and_change_nothing(
    staff_client, failed_session, kwargs, error
):
    before = state(failed_session)
    response = staff_client.post(
        page_of(failed_session), {"action": "replay", "instance": "t_fetch#0", "kwargs": kwargs}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'class="errorlist"' in html and error in html
    # the form keeps what was typed
    assert kwargs.replace('"', "&quot;") in html
    assert state(failed_session) == before


def test_unknown_instances_and_wrong_statuses_show_the_librarys_message(
    staff_client, failed_session
):
    before = state(failed_session)
    response = post(staff_client, failed_session, action="replay", instance="t_nothing#0")
    assert any("no task instance named 't_nothing#0'" in m for m in messages_of(response))
    response = post(staff_client, failed_session, action="skip", instance="t_report#0")
    assert any(
        "replay" not in m and "'t_report#0' is 'unstarted'" in m for m in messages_of(response)
    )
    response = post(staff_client, failed_session, action="explode", instance="t_fetch#0")
    assert response.status_code == 400
    assert state(failed_session) == before


def test_skip_with_cascade_fires_the_tasks_name(staff_client, failed_session):
    response = post(
        staff_client,
        failed_session,
        action="skip",
        instance="t_fetch#0",
        cascade="1",
        result='{"source": "manual"}',
    )
    assert "Skipped t_fetch#0; fired its task's name" in " ".join(messages_of(response))
    storage = failed_session.storage
    assert storage["t_fetch#0"].status == "skipped"
    assert storage["t_fetch#0"].metadata["inspector"]["cascade"] is True
    report = storage["t_report#0"]
    assert report.status == "finished"
    assert report.kwargs["t_fetch"] == {"source": "manual"}


def test_skip_without_cascade_leaves_the_next_task_waiting(staff_client, failed_session):
    post(staff_client, failed_session, action="skip", instance="t_fetch#0")
    storage = failed_session.storage
    assert storage["t_fetch#0"].status == "skipped"
    assert storage["t_report#0"].status == "unstarted"


def test_resend_sends_a_stuck_instance_again(staff_client, settings, failed_session):
    # Given an instance marked scheduled whose message was lost
    failed_session.fire("start", {"ok": True})  # and_every-less: no new t_fetch instance
    failed_session.update_instance_status("t_report#0", "scheduled")
    settings.TRIGGERS = dict(django_settings.TRIGGERS, STUCK_AFTER=0)
    html = staff_client.get(page_of(failed_session)).content.decode()
    row = re.search(r'<tr id="inst-t_report#0".*?</tr>', html, re.S).group(0)
    assert 'value="resend"' in row
    assert '<strong class="stuck">stuck</strong>' in row
    # When the operator re-sends it
    response = post(staff_client, failed_session, action="resend", instance="t_report#0")
    # Then it runs
    assert "t_report#0: sent to its runner again." in messages_of(response)
    inst = failed_session.storage["t_report#0"]
    assert inst.status == "finished"
    assert inst.metadata["inspector"]["action"] == "resend"


def test_fire_with_kwargs(staff_client, unique_uid):
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    manager.fire("approved")
    try:
        response = post(
            staff_client, manager, action="fire", trigger="start", kwargs='{"ok": true}'
        )
        assert "Fired start: scheduled t_fetch#0." in messages_of(response)
        storage = manager.storage
        assert storage.latest_kwargs["start"] == {"ok": True}
        assert storage["t_fetch#0"].status == "finished"
        assert storage["t_fetch#0"].metadata["inspector"] == {
            "action": "fire",
            "user": "ops",
            "at": storage["t_fetch#0"].metadata["inspector"]["at"],
            "trigger": "start",
        }
    finally:
        manager.storage.delete()


def test_a_fire_whose_dispatch_fails_is_a_warning_and_the_instance_can_be_resent(
    staff_client, unique_uid
):
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    try:
        # Given a broker that is down
        force_runner("tests.test_inspector.BrokenRunner")
        # When the operator fires start
        response = post(staff_client, manager, action="fire", trigger="start", kwargs='{"ok": 1}')
        # Then the page warns that t_fetch#0 could not be sent (the fire itself was recorded)
        [message] = list(response.context["messages"])
        assert message.level_tag == "warning"
        assert "could not dispatch t_fetch#0 (ConnectionError: broker down)" in str(message)
        assert manager.storage.latest_kwargs["start"] == {"ok": 1}
        row = re.search(r'<tr id="inst-t_fetch#0".*?</tr>', response.content.decode(), re.S)
        assert "ready, not sent: ConnectionError: broker down" in row.group(0)
        # And once the broker is back, Re-send runs it
        force_runner("threading")
        post(staff_client, manager, action="resend", instance="t_fetch#0")
        assert manager.storage["t_fetch#0"].status == "finished"
    finally:
        manager.storage.delete()


def test_bad_fire_input_changes_nothing(staff_client, failed_session):
    before = state(failed_session)
    response = staff_client.post(
        page_of(failed_session), {"action": "fire", "trigger": "start", "kwargs": "{nope"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode()
    response = staff_client.post(page_of(failed_session), {"action": "fire", "trigger": ""})
    assert response.status_code == 400
    assert "enter the name of the trigger" in response.content.decode()
    response = post(staff_client, failed_session, action="fire", trigger="x" * 500)
    assert any(m.startswith("fire refused:") for m in messages_of(response))
    assert state(failed_session) == before
