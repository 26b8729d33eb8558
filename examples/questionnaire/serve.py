"""``demo.py --serve``: the web inspector on the demo's sessions.

Once the demo has run, :func:`serve` creates a staff user with a fresh
password in the run's SQLite database, serves the Django admin and the
triggers inspector (static files included) on 127.0.0.1, prints where and how
to sign in and the page of each session, and returns on Ctrl-C.
"""

from __future__ import annotations

import secrets
import socketserver
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

SETTINGS = "examples.questionnaire.serve_settings"
USERNAME = "demo"


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's output stays readable; errors still reach stderr


def serve(uids: list[tuple[str, str]], port: int, say: Callable[[str], None]) -> None:
    """Serve until Ctrl-C; ``uids`` are ``(label, session uid)`` pairs."""
    from django.contrib.auth import get_user_model
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.urls import reverse

    call_command("migrate", verbosity=0, interactive=False)
    password = secrets.token_urlsafe(9)
    user_model = get_user_model()
    user = user_model.objects.filter(username=USERNAME).first()
    if user is None:
        user = user_model.objects.create_user(USERNAME, is_staff=True, is_superuser=True)
    user.set_password(password)
    user.save()

    app = StaticFilesHandler(get_wsgi_application())
    server = make_server("127.0.0.1", port, app, server_class=_Server,
                         handler_class=_QuietHandler)  # fmt: skip
    base = f"http://127.0.0.1:{server.server_port}"
    say("")
    say(f"Inspector {base}{reverse('triggers:sessions')}")
    say(f"  sign in as {USERNAME} / {password}")
    for label, uid in uids:
        say(f"  {label:<9} {base}{reverse('triggers:session', args=[uid])}")
    say("Serving until Ctrl-C.")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        say("Stopped serving.")
    finally:
        server.server_close()
