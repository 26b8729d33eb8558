"""The inspector's pages: the session list and one session.

Both are for staff only (or whoever ``TRIGGERS['INSPECTOR_PERMISSION']``
allows): an anonymous visitor is sent to the admin login, a signed-in user
without permission gets 403. Actions are POST forms on the session page,
CSRF-protected; a GET never changes anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from .. import conf
from ..exceptions import DispatchError, TriggersError
from ..graph import build_graph, task_state
from ..inspection import inspect_session
from ..shortcuts import get_trigger_manager
from ..types import TaskInstance
from .actions import FormError, run_action
from .listing import list_sessions
from .svg import to_svg

__all__ = ["has_permission", "session_detail", "session_list"]

PAGE_SIZE = 50


def has_permission(request: HttpRequest) -> bool:
    """Whether ``request`` may use the inspector: ``TRIGGERS['INSPECTOR_PERMISSION']``
    (the dotted path of a ``callable(request) -> bool``), else active staff."""
    path = conf.get("INSPECTOR_PERMISSION")
    if path:
        try:
            check: Callable[[HttpRequest], bool] = (
                import_string(path) if isinstance(path, str) else path
            )
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"TRIGGERS['INSPECTOR_PERMISSION'] = {path!r} cannot be imported: {exc}"
            ) from exc
        return bool(check(request))
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _login_url() -> str:
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        from django.conf import settings

        return str(settings.LOGIN_URL)


def inspector_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Permission check in front of an inspector view."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not has_permission(request):
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                # Imported here: it needs django.contrib.auth's models.
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path(), _login_url())
            raise PermissionDenied("you may not use the triggers inspector")
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _admin_context(request: HttpRequest, title: str) -> dict[str, Any]:
    """What admin/base_site.html expects (site header, user links)."""
    from django.contrib import admin

    context: dict[str, Any] = dict(admin.site.each_context(request))
    context.update(title=title, is_popup=False, is_nav_sidebar_enabled=False)
    return context


@never_cache
@require_GET
@inspector_view
def session_list(request: HttpRequest) -> HttpResponse:
    """Sessions, newest activity first; ``?q=`` filters by uid prefix,
    ``?uid=`` opens one session, ``?page=`` pages."""
    uid = request.GET.get("uid", "").strip()
    if uid:
        return HttpResponseRedirect(reverse("triggers:session", args=[uid]))
    prefix = request.GET.get("q", "").strip()
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    found = list_sessions(prefix, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    pages = max(1, -(-found.total // PAGE_SIZE))

    def page_url(number: int) -> str:
        query = {"q": prefix, "page": number} if prefix else {"page": number}
        return "?" + urlencode(query)

    context = _admin_context(request, "Trigger sessions")
    context.update(
        listing=found,
        prefix=prefix,
        page=page,
        pages=pages,
        previous_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if page < pages else None,
    )
    return render(request, "triggers/inspector/session_list.html", context)


def _short_time(stamp: str | None) -> str:
    """``2026-11-28 00:55:09.418`` from an ISO timestamp (UTC)."""
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        return stamp


def _duration(stamps: dict[str, str]) -> str:
    start = stamps.get(TaskInstance.STATUS_RUNNING)
    end = next(
        (stamps[s] for s in ("finished", "failed", "skipped", "replayed") if s in stamps), None
    )
    if not (start and end):
        return ""
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return ""
    return f"{seconds:.3f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _instance_rows(
    report: dict[str, Any], instances: dict[str, TaskInstance]
) -> list[dict[str, Any]]:
    rows = []
    for row in report["instances"]:
        inst = instances.get(row["name"])
        meta = inst.metadata if inst else {}
        stamps = dict(row["timestamps"])
        row = dict(
            row,
            created=_short_time(stamps.get("created")),
            last_modified=_short_time(stamps.get("last_modified")),
            duration=_duration(stamps),
            traceback=meta.get("exc_traceback", ""),
            kwargs=json.dumps(inst.kwargs, indent=2, sort_keys=True) if inst else "{}",
            inspector=meta.get("inspector"),
            can_replay=row["status"] == TaskInstance.STATUS_FAILED,
            can_resend=inst is not None
            and (inst.can_run or row["status"] in ("scheduled", "running")),
        )
        rows.append(row)
    return rows


def _task_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in report["instances"]:
        by_task.setdefault(row["task"], []).append(row)
    pending = {t["task"]: t for t in report["tasks_without_instances"]}
    rows = []
    for name, directives in report["tasks"].items():
        mine = by_task.get(name, [])
        if name in pending:
            detail = pending[name]["waiting"] or "no instance yet"
        else:
            waiting = [r["detail"] for r in mine if r["waiting_on"]]
            detail = waiting[0] if waiting else ""
        rows.append(
            {
                "name": name,
                "state": task_state(r["status"] for r in mine),
                "instances": [r["name"] for r in mine],
                "detail": detail,
                "directives": directives,
            }
        )
    return rows


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
@inspector_view
def session_detail(request: HttpRequest, uid: str) -> HttpResponse:
    """One session: tasks, instances, timers, graph; POST runs an action."""
    try:
        manager = get_trigger_manager(uid)
    except (TriggersError, ValueError, TypeError) as exc:
        raise Http404(str(exc)) from exc
    form_error: FormError | None = None
    if request.method == "POST":
        action = request.POST.get("action", "")
        user = request.user.get_username() if request.user.is_authenticated else "anonymous"
        try:
            if not _exists(manager):
                raise Http404(f"no session {uid!r}")
            message = run_action(manager, action, request.POST, user)
        except FormError as exc:
            form_error = exc
            messages.error(request, f"{action}: {exc.field}: {exc}")
        except DispatchError as exc:
            # The change was written; only handing instances to the runner failed.
            messages.warning(request, f"{action}: {exc}")
            return HttpResponseRedirect(request.path)
        except (TriggersError, ValueError, TypeError, KeyError) as exc:
            messages.error(request, f"{action} refused: {exc}")
            return HttpResponseRedirect(request.path)
        else:
            messages.success(request, message)
            return HttpResponseRedirect(request.path)
    storage = manager.storage
    report = inspect_session(manager)
    if not report["exists"]:
        raise Http404(f"no session {uid!r}")
    instances = storage.instances
    graph = build_graph(storage.tasks, instances.values(), report["fired"])
    task_names = set(report["tasks"])
    svg = to_svg(
        graph,
        title=f"workflow of session {uid}",
        link=lambda n: f"#task-{n}" if n in task_names else None,
    )
    triggers = sorted({n for n, node in graph.nodes.items() if node.kind == "trigger"})
    timers = _timers(storage)
    context = _admin_context(request, f"Session {uid}")
    context.update(
        uid=uid,
        report=report,
        tasks=_task_rows(report),
        instances=_instance_rows(report, instances),
        graph_svg=svg,
        known_triggers=triggers,
        has_timers=bool(timers),
        timers=timers,
        form_error=form_error,
        posted=request.POST if form_error else {},
        last_change=_short_time(storage.metadata.get("updated")),
    )
    return render(
        request,
        "triggers/inspector/session_detail.html",
        context,
        status=400 if form_error else 200,
    )


def _exists(manager: Any) -> bool:
    return bool(inspect_session(manager)["exists"])


def _timers(storage: Any) -> list[dict[str, Any]]:
    """Pending timers (``storage.timers``: a list of plain dicts, earliest
    first; a custom storage may give a mapping of id -> timer)."""
    timers = getattr(storage, "timers", None)
    if not timers:
        return []
    if isinstance(timers, dict):
        return [
            {"name": str(key), "detail": json.dumps(value, sort_keys=True, default=str)}
            for key, value in timers.items()
        ]
    rows = []
    for timer in timers:
        what = f"deadline of {timer['instance']}" if timer.get("instance") else "delayed fire"
        detail = f"{what}, kwargs {json.dumps(timer.get('kwargs') or {}, sort_keys=True)}"
        rows.append({"name": f"{timer['trigger']} due {timer['due']}", "detail": detail})
    return rows
