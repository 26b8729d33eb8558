"""A payment provider's webhook: each event fires a trigger once, however
often the provider delivers it (used by the "Idempotency keys" page)."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from triggers.shortcuts import get_trigger_manager


def parse_event(request: HttpRequest) -> dict | None:
    """The event in the request body. A real handler checks the provider's
    signature here first (with the provider's SDK) and refuses what fails."""
    try:
        event = json.loads(request.body)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "id" in event else None


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest) -> HttpResponse:
    event = parse_event(request)
    if event is None:
        return HttpResponseBadRequest("not an event")
    data = event["data"]
    manager = get_trigger_manager(f"order:{data['order_id']}")
    manager.fire(
        "paymentReceived",
        {"amount": data["amount"]},
        idempotency_key=event["id"],  # the provider's id of this event
    )
    # 200 either way: a repeat is no error, and the provider must stop
    # retrying once the event is recorded.
    return HttpResponse(status=200)
