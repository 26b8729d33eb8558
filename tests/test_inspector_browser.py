"""The inspector in a real browser: Debian's chromium, driven by Selenium
through the system chromedriver (``make ensure-chromium`` installs both),
against Django's live server, with tasks on the real Celery worker.

Screenshots of the pages land in ``$TRIGGERS_TEST_SCREENSHOTS`` (default: a
``triggers-inspector-screenshots`` directory under the system temp dir); the
test prints where.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from triggers.shortcuts import get_trigger_manager

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WORKFLOW = {
    "t_fetch": {"after": ["start"], "run": "tests.inspector_tasks.FlakyTask"},
    "t_report": {"after": ["t_fetch", "approved"], "run": "triggers.testing.PassThruTask"},
}


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def screenshots() -> Path:
    default = Path(tempfile.gettempdir()) / "triggers-inspector-screenshots"
    path = Path(os.environ.get("TRIGGERS_TEST_SCREENSHOTS", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium through /usr/bin/chromedriver (never a downloaded one)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} missing: run `make ensure-chromium`"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: no network, no download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def full_page_screenshot(driver: Any, path: Path) -> None:
    """The whole page, not only the window (Chrome DevTools protocol)."""
    import base64

    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.django_db(transaction=True)
def test_replay_a_failed_instance_from_the_browser(
    live_server, browser, celery_worker, django_user_model, screenshots, capsys
):
    from selenium.webdriver.common.by import By

    # A short uid of its own (the screenshots go in the docs), unique per run
    family = f"order:{uuid.uuid4().hex[:8]}"
    unique_uid = f"{family}:checkout"

    # Given a session whose t_fetch#0 failed on the real worker
    manager = get_trigger_manager(unique_uid)
    manager.update_configuration(WORKFLOW)
    manager.fire("approved", {"by": "ops"})
    manager.fire("start", {"ok": False})
    wait_for(
        lambda: "t_fetch#0" in manager.storage and manager.storage["t_fetch#0"].status == "failed",
        what="t_fetch#0 to fail on the worker",
    )
    # ... beside two others of the same family
    others = [get_trigger_manager(f"{family}:{step}") for step in ("cart", "payment")]
    for other in others:
        other.update_configuration(WORKFLOW)
        other.fire("approved")
    # And a staff user
    django_user_model.objects.create_user("ops", password="inspect-me", is_staff=True)
    try:
        # When the operator signs in through the admin login
        browser.get(live_server.url + reverse("triggers:sessions"))
        assert "/admin/login/" in browser.current_url
        browser.find_element(By.ID, "id_username").send_keys("ops")
        browser.find_element(By.ID, "id_password").send_keys("inspect-me")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait_for(lambda: browser.current_url.endswith(reverse("triggers:sessions")), what="list")
        # And finds the session by its uid prefix
        # (the URL changes before the new page's elements exist: wait for them)
        search = wait_for(lambda: browser.find_elements(By.ID, "searchbar"), what="search")[0]
        search.send_keys(family)
        search.submit()
        link = wait_for(
            lambda: browser.find_elements(By.LINK_TEXT, unique_uid), what="the session link"
        )[0]
        # the admin stylesheet applies (the page looks like the admin)
        header = browser.find_element(By.ID, "header")
        assert header.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        full_page_screenshot(browser, screenshots / "inspector-list.png")
        link.click()
        wait_for(lambda: browser.find_elements(By.ID, "instances"), what="the session page")
        row = browser.find_element(By.ID, "inst-t_fetch#0")
        assert row.get_attribute("data-status") == "failed"
        assert "the upstream service said no" in row.text
        assert browser.find_element(By.CSS_SELECTOR, "svg.triggers-graph g.state-failed")
        full_page_screenshot(browser, screenshots / "inspector-session.png")

        # And replays it with kwargs that make it pass
        row.find_element(By.CSS_SELECTOR, ".action-replay summary").click()
        row.find_element(By.NAME, "kwargs").send_keys('{"start": {"ok": true}}')
        row.find_element(By.CSS_SELECTOR, "button[value=replay]").click()

        # Then the page says so, and the clone finishes (and its cascade runs)
        wait_for(
            lambda: "Replayed t_fetch#0 as t_fetch#1" in browser.page_source,
            what="the replay message",
        )

        def clone_finished() -> bool:
            browser.refresh()
            rows = browser.find_elements(By.ID, "inst-t_report#0")
            return bool(rows) and rows[0].get_attribute("data-status") == "finished"

        wait_for(clone_finished, what="t_report#0 to finish after the replay")
        clone = browser.find_element(By.ID, "inst-t_fetch#1")
        assert clone.get_attribute("data-status") == "finished"
        assert "replay of t_fetch#0" in clone.text
        original = browser.find_element(By.ID, "inst-t_fetch#0")
        assert original.get_attribute("data-status") == "replayed"
        assert "replay by ops" in original.text
        full_page_screenshot(browser, screenshots / "inspector-session-replayed.png")
        assert manager.storage["t_fetch#0"].metadata["inspector"]["user"] == "ops"
    finally:
        for each in (manager, *others):
            each.storage.delete()
        with capsys.disabled():
            print(f"\ninspector screenshots: {screenshots}")
