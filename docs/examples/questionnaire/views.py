"""Views of the questionnaire application: they only fire triggers.

Each request may be served by a different process or server; the session
state in Redis is what ties the requests together.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from triggers.shortcuts import get_trigger_manager, start_session


def session_uid(questionnaire_id: str) -> str:
    # The prefix keeps these sessions apart from other workflows' sessions
    # kept in the same cache.
    return f"questionnaire:{questionnaire_id}"


@require_GET
@ensure_csrf_cookie
def status(request: HttpRequest, questionnaire_id: str) -> JsonResponse:
    # What the page's script polls: each instance and its status. It also
    # sets the CSRF cookie the script sends back with every POST.
    storage = get_trigger_manager(session_uid(questionnaire_id)).storage
    instances = sorted(storage.instances.items())
    return JsonResponse({"instances": {name: inst.status for name, inst in instances}})


@require_POST
def start(request: HttpRequest, questionnaire_id: str) -> JsonResponse:
    # Configures the session with the workflow declared in settings.
    start_session(session_uid(questionnaire_id), workflow="questionnaire")
    return JsonResponse({"started": questionnaire_id})


@require_POST
def submit_page(request: HttpRequest, questionnaire_id: str, page: int) -> JsonResponse:
    data = json.loads(request.body)
    manager = get_trigger_manager(session_uid(questionnaire_id))
    scheduled = []
    if page == 1:
        respondent = {"name": data["name"], "email": data["email"]}
        scheduled += manager.fire("firstPageReceived", respondent)
    scheduled += manager.fire("pageReceived", {"page": page, "answers": data["answers"]})
    # Everything this request set off, from both fires.
    return JsonResponse({"scheduled": [instance.name for instance in scheduled]})


@require_POST
def finish(request: HttpRequest, questionnaire_id: str) -> JsonResponse:
    data = json.loads(request.body)
    manager = get_trigger_manager(session_uid(questionnaire_id))
    scheduled = manager.fire("questionnaireComplete", {"answers": data["answers"]})
    return JsonResponse({"scheduled": [instance.name for instance in scheduled]})


@require_POST
def withdraw(request: HttpRequest, questionnaire_id: str) -> JsonResponse:
    get_trigger_manager(session_uid(questionnaire_id)).fire("questionnaireWithdrawn")
    return JsonResponse({"withdrawn": questionnaire_id})
