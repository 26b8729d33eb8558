"""``make demo`` runs the questionnaire workflow end to end in real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import redis
from django.conf import settings

from examples.embedded_redis import free_port, ping

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "examples.questionnaire.demo"]


def run_demo(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the demo has its own settings
    return subprocess.run(
        [*DEMO, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def broker_args() -> list[str]:
    """The suite's own broker: RabbitMQ in the django-redis-cache env, whose
    redis-py 3 Kombu's Redis transport refuses; the test Redis elsewhere."""
    return ["--broker-url", settings.CELERY_BROKER_URL]


def broker_leftovers(out: str) -> list[str]:
    """What a demo run left on the suite's broker: keys under its prefix on a
    Redis broker, its queue and exchange on an AMQP one."""
    run_id = found(r"Questionnaire demo, run (\w+)", out)
    queue = found(r"queue (questionnaire-demo-\w+)", out)
    assert queue == f"questionnaire-demo-{run_id}"
    url = settings.CELERY_BROKER_URL
    if url.partition(":")[0] in ("redis", "rediss"):
        client = redis.Redis.from_url(url)
        try:
            return [key.decode() for key in client.scan_iter(match=f"qdemo-{run_id}:*")]
        finally:
            client.close()
    from kombu import Connection

    left = []
    with Connection(url) as connection:
        checks = {
            f"queue {queue}": lambda channel: channel.queue_declare(queue, passive=True),
            f"exchange {queue}": lambda channel: channel.exchange_declare(
                queue, "direct", passive=True
            ),
        }
        for what, declare in checks.items():
            channel = connection.channel()  # a failed passive declare closes it
            try:
                declare(channel)
            except connection.channel_errors:
                continue
            left.append(what)
            channel.close()
    return left


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the demo's output:\n{text}"
    return match.group(1)


def leftover_processes(run_id: str) -> list[int]:
    """Live (not zombie) processes that belong to a demo run: the demo exports
    its run id to the worker and the firing processes it starts."""
    marker = f"QUESTIONNAIRE_DEMO_RUN_ID={run_id}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker not in environ.read_bytes().split(b"\0"):
                continue
            stat = (environ.parent / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            found.append(int(environ.parent.name))
    return found


def test_the_demo_runs_the_workflow_and_passes(redis_url):
    # Given the test Redis server
    # When the demo runs against it
    result = run_demo("--redis-url", redis_url, "--seed", "11", *broker_args())
    # Then it exits 0 after printing the timeline and the final sessions
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Timeline (A and B are the firing processes" in out
    # (fires from both firing processes, tasks from the worker's pool processes)
    assert re.search(r"A \d+ +(web|embedded) +fire ", out)
    assert re.search(r"B \d+ +(web|embedded) +fire ", out)
    assert re.search(r"worker \d+ +web +t_importSubject#0 imported subject", out)
    # And the session tables are triggers_inspect's, with every instance as the workflow says
    assert "  INSTANCE                   STATUS" in out
    assert re.search(r"t_importBrowserMetadata#0 +abandoned +unless embeddedApp fired", out)
    assert re.search(r"t_importResponses#3 +finished +result: \{\"page\": \d", out)
    # ... the dropout's deadline (applied by triggers_timers --loop) reminded them
    assert re.search(r"dropout +t_remindRespondent#0 reminded Grace Hopper", out)
    assert re.search(r"t_importSubject#0 +unstarted", out)
    assert "ok    dropout: never completed" in out
    assert "Result: every instance ended as the workflow says." in out
    # And it stopped every process it started and removed its keys
    run_id = found(r"Questionnaire demo, run (\w+)", out)
    assert leftover_processes(run_id) == []
    demo_db = redis.Redis.from_url(f"{redis_url}/3")
    try:
        assert list(demo_db.scan_iter(match=f"qdemo-{run_id}:*")) == []
    finally:
        demo_db.close()
    # ... and what it put on the broker
    assert broker_leftovers(out) == []


def test_without_a_redis_server_the_demo_starts_its_own():
    # Given a Redis URL where nothing answers
    url = f"redis://127.0.0.1:{free_port()}"
    # When the demo runs
    result = run_demo("--redis-url", url, "--pages", "2", *broker_args())
    # Then it starts an embedded server, runs the workflow on it, and passes
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"No Redis answers at {url}; starting an embedded redis-server." in result.stdout
    assert "(embedded redis-server (" in result.stdout
    assert "Result: every instance ended as the workflow says." in result.stdout
    # And that server is gone afterwards
    embedded = found(r"Redis +(redis://127.0.0.1:\d+)/3", result.stdout)
    assert not ping(embedded, timeout=0.2)
    run_id = found(r"Questionnaire demo, run (\w+)", result.stdout)
    assert leftover_processes(run_id) == []
    assert broker_leftovers(result.stdout) == []


def test_demo_help_explains_the_options():
    result = run_demo("--help", timeout=30)
    assert result.returncode == 0
    options = ["--redis-url", "--broker-url", "--embedded-redis", "--seed", "--pages"]
    for option in [*options, "--timeout", "--keep"]:
        assert option in result.stdout


def test_the_demo_fails_when_an_instance_did_not_end_as_the_workflow_says():
    # Given the demo's expectations for a 2-page web respondent
    from examples.questionnaire.demo import Respondent, verify
    from triggers.types import TaskConfig, TaskInstance

    respondent = Respondent("web", "uid", 2, False, "Ada", "ada@example.com", "Firefox")

    def instance(name: str, status: str) -> TaskInstance:
        task = name.partition("#")[0]
        return TaskInstance(name, TaskConfig(task, ["x"], "run.Task"), status)

    # When the second page's import failed and was therefore never recorded
    instances = {
        "t_importSubject#0": instance("t_importSubject#0", "finished"),
        "t_importResponses#0": instance("t_importResponses#0", "finished"),
        "t_importResponses#1": instance("t_importResponses#1", "failed"),
        "t_importBrowserMetadata#0": instance("t_importBrowserMetadata#0", "finished"),
    }
    imported = [
        {"what": "subject", "subjectId": "s1"},
        {"what": "responses", "subjectId": "s1", "page": 1},
        {"what": "browser metadata"},
    ]
    problems = verify(respondent, instances, imported)
    # Then the demo reports both the wrong status and the missing import
    assert problems == [
        "instances t_importResponses#1: failed (expected finished)",
        "responses imported for pages [1], expected 1..2 once each",
    ]
