"""``make demo DEMO_ARGS=--serve``: after the run, the demo serves the
inspector and prints how to sign in and each session's page."""

from __future__ import annotations

import http.cookiejar
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.test_demo import broker_args, broker_leftovers, found, leftover_processes

ROOT = Path(__file__).resolve().parent.parent


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """What the process printed up to (at least) the line holding ``marker``.
    Reads the pipe's descriptor directly: a buffered reader could hold the
    marker while select() waits for more."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout}s:\n{out.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk or not ready, f"the demo exited early:\n{out.decode(errors='replace')}"
        out += chunk
    return out.decode()


def sign_in(opener: urllib.request.OpenerDirector, base: str, user: str, password: str) -> None:
    login = f"{base}/admin/login/?next=/triggers/"
    page = opener.open(login, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"username": user, "password": password, "csrfmiddlewaretoken": token}
    request = urllib.request.Request(
        login, data=urllib.parse.urlencode(form).encode(), headers={"Referer": login}
    )
    landed = opener.open(request, timeout=10)
    assert landed.geturl() == f"{base}/triggers/", landed.geturl()


# The demo starts a worker and two firing processes and runs the workflow
# first (test_demo.py allows it 100 s); serving and stopping come on top.
@pytest.mark.timeout(300)
def test_the_demo_serves_the_inspector_with_each_sessions_page(redis_url):
    # Given the demo run with --serve
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "-m", "examples.questionnaire.demo", "--serve"]
    process = subprocess.Popen(
        [*command, "--redis-url", redis_url, "--seed", "5", "--pages", "2", *broker_args()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # When it has run the workflow, it prints the inspector's address,
        # a sign-in and the page of each session
        out = read_until(process, "Serving until Ctrl-C.", timeout=180)
        assert "Result: every instance ended as the workflow says." in out
        base = found(r"Inspector (http://127\.0\.0\.1:\d+)/triggers/", out)
        user, password = re.search(r"sign in as (\S+) / (\S+)", out).groups()
        pages = dict(re.findall(r"^  (web|embedded) +(http://\S+)$", out, re.M))
        assert set(pages) == {"web", "embedded"}
        run_id = found(r"Questionnaire demo, run (\w+)", out)
        assert pages["web"] == f"{base}/triggers/sessions/questionnaire:{run_id}:web/"

        # Then a visitor who has not signed in is sent to the login
        anonymous = urllib.request.urlopen(pages["web"], timeout=10)
        assert anonymous.geturl().startswith(f"{base}/admin/login/")
        # And with the printed sign-in the page shows the session
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        sign_in(opener, base, user, password)
        html = opener.open(pages["embedded"], timeout=10).read().decode()
        assert f"Session questionnaire:{run_id}:embedded" in html
        assert re.search(r'id="inst-t_importSubject#0"[^>]*data-status="finished"', html)
        assert re.search(r'id="inst-t_importBrowserMetadata#0"[^>]*data-status="abandoned"', html)
        assert '<svg xmlns="http://www.w3.org/2000/svg" class="triggers-graph"' in html
        # ... with the admin's stylesheet served too
        css = opener.open(f"{base}/static/admin/css/base.css", timeout=10)
        assert css.status == 200
    finally:
        # When the operator presses Ctrl-C
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    # Then the demo stops serving, cleans up as usual and exits 0
    out += rest
    assert "Stopped serving." in out
    assert process.returncode == 0, out
    assert leftover_processes(run_id) == []
    demo_db = redis.Redis.from_url(f"{redis_url}/3")
    try:
        assert list(demo_db.scan_iter(match=f"qdemo-{run_id}:*")) == []
    finally:
        demo_db.close()
    assert broker_leftovers(out) == []
