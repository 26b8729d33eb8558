"""The operator commands, run through call_command against real Redis and the
real worker: what they print, what they change, and what they refuse."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from tests.utils import wait_for
from triggers.manager import TriggerManager
from triggers.shortcuts import get_trigger_manager, start_session
from triggers.types import TaskInstance

PASS = "triggers.testing.PassThruTask"
FAIL = "triggers.testing.FailingTask"

SURVEY = {
    "t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PASS},
    "t_importResponses": {
        "after": ["t_importSubject", "pageReceived"],
        "andEvery": "pageReceived",
        "run": PASS,
    },
    "t_importBrowserMetadata": {
        "after": ["firstPageReceived", "questionnaireComplete"],
        "unless": ["embeddedApp"],
        "run": PASS,
    },
    "t_score": {"after": ["questionnaireComplete"], "run": FAIL},
    "t_report": {"after": ["t_score"], "run": PASS},
}


@pytest.fixture(autouse=True)
def survey_workflow(settings):
    settings.TRIGGERS = {"CACHE": "default", "WORKFLOWS": {"survey": SURVEY}}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as caught:
        run(*args)
    return caught.value


def settled(manager: TriggerManager, name: str, status: str) -> bool:
    instances = manager.storage.instances
    return name in instances and instances[name].status == status


@pytest.fixture
def failed_session(celery_worker, unique_uid) -> TriggerManager:
    """A survey session whose scoring task failed on the worker."""
    manager = start_session(unique_uid, "survey")
    manager.fire("questionnaireComplete")
    wait_for(lambda: settled(manager, "t_score#0", "failed"), timeout=20, message="t_score failed")
    return manager


def test_inspect_shows_what_each_instance_waits_on_and_why_it_failed(failed_session):
    # Given a session where the subject import waits on the first page and scoring failed
    uid = failed_session.storage.uid
    # When an operator inspects it
    text = run("triggers_inspect", uid)
    # Then each instance is a row with its status and what it waits on or why it failed
    assert f"Session {uid!r} (workflow survey): 5 tasks" in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "unstarted" in lines["t_importSubject#0"]
    assert "waiting on 1 of 2: firstPageReceived" in lines["t_importSubject#0"]
    assert "failed" in lines["t_score#0"]
    assert "RuntimeError: t_score#0 failed on purpose" in lines["t_score#0"]
    # And tasks no trigger has reached yet are listed with what they need
    assert (
        "no instance yet; waiting on 2 of 2: pageReceived, t_importSubject"
        in (lines["t_importResponses"])
    )


def test_inspect_json_is_the_same_report_for_machines(failed_session):
    # Given the failed session; when inspected with --json
    report = json.loads(run("triggers_inspect", failed_session.storage.uid, "--json"))
    # Then the same facts come as data
    rows = {row["name"]: row for row in report["instances"]}
    assert rows["t_importSubject#0"]["waiting_on"] == ["firstPageReceived"]
    assert rows["t_score#0"]["exception"] == {
        "type": "builtins.RuntimeError",
        "message": "t_score#0 failed on purpose",
    }
    assert report["summary"] == {"failed": 1, "unstarted": 2}
    assert report["fired"] == ["questionnaireComplete"]


def test_inspect_flags_instances_stuck_in_scheduled(unique_uid):
    # Given an instance that was marked scheduled but whose message never arrived
    manager = start_session(unique_uid, "survey")
    manager.storage.create_instance("t_report", status=TaskInstance.STATUS_SCHEDULED)
    manager.update_instance_status("t_report#0", TaskInstance.STATUS_SCHEDULED)
    # When inspected with a stuck threshold it has passed
    text = run("triggers_inspect", unique_uid, "--stuck-after", "0")
    # Then it is reported as stuck
    assert "STUCK: scheduled since" in text
    assert f"1 instance looks stuck; `manage.py triggers_resend {unique_uid}`" in text
    # ... and counted in the singular where there is one
    assert f"Session {unique_uid!r} (workflow survey): 5 tasks, 1 instance (1 scheduled)" in text
    assert json.loads(run("triggers_inspect", unique_uid, "--json", "--stuck-after", "0"))[
        "instances"
    ][0]["stuck"]


def test_inspect_refuses_a_session_that_does_not_exist(unique_uid):
    # Given a UID nobody used; when inspected
    error = refused("triggers_inspect", unique_uid)
    # Then it says so and exits 1
    assert error.returncode == 1
    assert "has no state" in str(error)


def test_fire_schedules_like_the_application_would(celery_worker, unique_uid):
    # Given a started session
    manager = start_session(unique_uid, "survey")
    # When an operator fires the two triggers of the subject import
    run("triggers_fire", unique_uid, "firstPageReceived", "--kwargs", '{"responses": {"age": 7}}')
    out = run("triggers_fire", unique_uid, "questionnaireComplete", "--json")
    # Then the output names what was scheduled and the worker runs it with the kwargs given
    scheduled = json.loads(out)["scheduled"]
    assert {"t_importSubject#0", "t_importBrowserMetadata#0", "t_score#0"} <= set(scheduled)
    wait_for(lambda: settled(manager, "t_importSubject#0", "finished"), timeout=20)
    kwargs = manager.storage["t_importSubject#0"].metadata["kwargs"]
    assert kwargs["firstPageReceived"] == {"responses": {"age": 7}}


def test_fire_text_output_and_a_fire_that_schedules_nothing(unique_uid):
    # Given a started session; when a trigger that completes nothing is fired
    start_session(unique_uid, "survey")
    text = run("triggers_fire", unique_uid, "pageReceived", "--kwargs", '{"page": 1}')
    # Then the operator is told nothing was scheduled
    assert text.strip() == f"Fired 'pageReceived' in session {unique_uid!r}: scheduled nothing"


def test_fire_refuses_what_the_manager_refuses(unique_uid):
    start_session(unique_uid, "survey")
    # Kwargs that are not JSON, or not an object: bad usage (exit 2)
    assert refused("triggers_fire", unique_uid, "x", "--kwargs", "{page: 1}").returncode == 2
    assert "must be a JSON object" in str(
        refused("triggers_fire", unique_uid, "x", "--kwargs", "[1]")
    )
    # A trigger name the manager rejects: refused (exit 1)
    error = refused("triggers_fire", unique_uid, "bad\x00name")
    assert error.returncode == 1 and "control characters" in str(error)


def test_fire_into_an_unknown_session_needs_a_workflow_or_force(unique_uid):
    # Given a UID with no state (a typo, most likely); when fired into
    assert "has no state" in str(refused("triggers_fire", unique_uid, "pageReceived"))
    assert get_trigger_manager(unique_uid).storage.latest_kwargs == {}
    # Then --workflow starts it on a declared workflow first
    run("triggers_fire", unique_uid, "pageReceived", "--workflow", "survey")
    manager = get_trigger_manager(unique_uid)
    assert manager.storage.metadata["workflow"] == "survey"
    assert manager.waiting_on() == {"t_importResponses#0": ["t_importSubject"]}
    # And an unknown workflow is refused with the likely name
    error = refused("triggers_fire", unique_uid + "x", "a", "--workflow", "survy")
    assert "did you mean 'survey'?" in str(error)


def test_replay_refuses_unfailed_and_unknown_instances(failed_session):
    uid = failed_session.storage.uid
    # An instance that did not fail
    error = refused("triggers_replay", uid, "t_importSubject#0")
    assert error.returncode == 1
    assert "'unstarted'; only failed instances can be replayed" in str(error)
    # An instance that does not exist
    assert "no task instance named 't_score#7'" in str(refused("triggers_replay", uid, "t_score#7"))


def test_replay_schedules_a_clone_with_replacement_kwargs(failed_session):
    # Given the failed scoring instance
    uid = failed_session.storage.uid
    # When it is replayed with replacement kwargs
    text = run(
        "triggers_replay", uid, "t_score#0", "--kwargs", '{"questionnaireComplete": {"n": 2}}'
    )
    # Then it is marked replayed and a clone with those kwargs runs on the worker
    assert text.strip() == f"Replayed t_score#0 in session {uid!r} as t_score#1 (scheduled)"
    wait_for(lambda: settled(failed_session, "t_score#1", "failed"), timeout=20)
    clone = failed_session.storage["t_score#1"]
    assert clone.metadata["parent"] == "t_score#0"
    assert clone.kwargs == {"questionnaireComplete": {"n": 2}}
    assert failed_session.storage["t_score#0"].status == TaskInstance.STATUS_REPLAYED
    # And a second replay of the same instance is refused
    assert "'replayed'" in str(refused("triggers_replay", uid, "t_score#0"))


def test_skip_with_cascade_lets_the_waiting_task_go_on(failed_session):
    uid = failed_session.storage.uid
    # --result without --cascade is bad usage
    error = refused("triggers_skip", uid, "t_score#0", "--result", '{"score": 1}')
    assert error.returncode == 2 and "needs --cascade" in str(error)
    # When the failed scoring is skipped with a cascade carrying a stand-in result
    out = run("triggers_skip", uid, "t_score#0", "--cascade", "--result", '{"score": 0}', "--json")
    # Then it is skipped and the report task runs with that result
    assert json.loads(out)["status"] == "skipped"
    wait_for(lambda: settled(failed_session, "t_report#0", "finished"), timeout=20)
    assert failed_session.storage["t_report#0"].metadata["kwargs"] == {"t_score": {"score": 0}}
    # And it cannot be skipped twice
    assert "only failed instances can be skipped" in str(refused("triggers_skip", uid, "t_score#0"))


def test_graph_draws_the_workflow_with_distinct_edges():
    # Given the survey workflow; when drawn as Mermaid
    text = run("triggers_graph", "survey")
    # Then triggers are rounded nodes, tasks boxes, and the edge kinds differ
    assert text.startswith("flowchart LR\n")
    ids = {}
    for line in text.splitlines()[1:]:
        if "[" in line and "--" not in line and "==" not in line:
            node, label = line.strip().split("[", 1)
            ids[label.strip('()["]')] = node.rstrip("(")
    assert '(["embeddedApp"])' in text and '["t_score"]' in text
    assert f"{ids['embeddedApp']} -.->|unless| {ids['t_importBrowserMetadata']}" in text
    assert f"{ids['pageReceived']} ==>|every| {ids['t_importResponses']}" in text
    assert f"{ids['t_score']} -->|cascade| {ids['t_report']}" in text
    assert f"{ids['firstPageReceived']} --> {ids['t_importSubject']}" in text


def test_graph_of_a_session_colours_nodes_by_status(failed_session):
    # Given the session with a failed instance; when drawn as DOT for it
    text = run(
        "triggers_graph", "survey", "--session", failed_session.storage.uid, "--format", "dot"
    )
    # Then the failed task is red, the waiting one amber, and fired triggers green
    assert text.startswith('digraph "survey" {')
    assert 'label="t_score\\n1 failed", shape=box, style=filled, fillcolor="#f8d7da"' in text
    assert (
        'label="t_importSubject\\n1 unstarted", shape=box, style=filled, fillcolor="#fff3cd"'
        in text
    )
    assert 'label="questionnaireComplete", shape=ellipse, style=filled, fillcolor="#d1e7dd"' in text
    assert "style=dashed, arrowhead=tee" in text
    data = json.loads(run("triggers_graph", "--session", failed_session.storage.uid, "--json"))
    states = {node["name"]: node["state"] for node in data["nodes"]}
    assert states["t_report"] == "none" and states["embeddedApp"] == "not fired"


def test_graph_needs_a_workflow_or_a_session():
    assert refused("triggers_graph").returncode == 2
    assert "no workflow named 'nope'" in str(refused("triggers_graph", "nope"))


def test_validate_passes_good_workflows_and_fails_bad_files(tmp_path):
    # Given the configured workflows are valid
    assert "survey: OK" in run("triggers_validate")
    # And a file with a typo, a runner that does not exist and a task that is not registered
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "t_a": {"after": ["x"], "run": PASS, "withParam": {}},
                "t_b": {"after": ["x"], "run": PASS, "using": "threads"},
                "t_c": {"after": ["x"], "run": "tests.tasks.Missing"},
            }
        )
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"t_a": {"after": ["x"], "run": PASS}}))
    # When CI validates both files
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("triggers_validate", str(good), str(bad), stdout=out)
    # Then it fails (exit 1) and reports each problem with its check id and a hint
    assert caught.value.returncode == 1
    assert f"1 of 2 workflows are invalid: {bad}" in str(caught.value)
    # ... the typo's suggestion said once, in its hint
    assert text_of(out).lower().count("did you mean 'withparams'") == 1
    text = out.getvalue()
    assert f"{good}: OK" in text
    assert "[triggers.E006]" in text and "directive 'withParam': unknown directive" in text
    assert "HINT: Did you mean 'withParams'?" in text
    assert "[triggers.E007]" in text and "HINT: Did you mean 'threading'?" in text
    assert "[triggers.E008]" in text and "no Celery task named 'tests.tasks.Missing'" in text


def text_of(out: io.StringIO) -> str:
    return out.getvalue()


def test_validate_reports_a_bad_settings_workflow_itself(settings, capsys):
    # Given a workflow declared in settings with a misspelt directive
    settings.TRIGGERS = {
        "CACHE": "default",
        "WORKFLOWS": {"survey": {"t_a": {"after": ["a"], "run": PASS, "unles": ["b"]}}},
    }
    # When CI runs `manage.py triggers_validate` (as manage.py does it, system
    # checks and all)
    with pytest.raises(SystemExit) as caught:
        ManagementUtility(["manage.py", "triggers_validate"]).execute()
    # Then the command's own report names the problem and it exits 1, rather
    # than Django's SystemCheckError stopping it before it starts
    assert caught.value.code == 1
    out, err = capsys.readouterr()
    assert "SystemCheckError" not in err and "System check identified" not in err
    assert "1 of 1 workflow is invalid: survey" in err
    assert "survey:\n  ERROR [triggers.E006]" in out
    assert "HINT: Did you mean 'unless'?" in out


def test_resend_sends_a_ready_instance_that_was_never_sent(celery_worker, unique_uid):
    # Given an instance whose triggers all fired but whose message never left
    # (the broker was down when it became ready): unstarted and ready
    manager = start_session(unique_uid, "survey")
    manager.storage.create_instance("t_report", kwargs={"t_score": {"score": 3}})
    assert manager.storage["t_report#0"].can_run
    # When an operator re-sends the session's stuck instances, giving no age
    text = run("triggers_resend", unique_uid)
    # Then it is sent right away and the worker runs it
    assert f"Re-sent t_report#0 (scheduled) in {unique_uid!r}" in text
    wait_for(lambda: settled(manager, "t_report#0", "finished"), timeout=20)


def test_validate_json_output_and_unreadable_files(tmp_path):
    # Given a file that is not JSON; when validated with --json
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("triggers_validate", str(broken), "--json", stdout=out)
    # Then the machine-readable report names the check id
    report = json.loads(out.getvalue())
    assert report["valid"] is False
    [problem] = report["workflows"][str(broken)]
    assert problem["id"] == "triggers.E005" and "not valid JSON" in problem["message"]
