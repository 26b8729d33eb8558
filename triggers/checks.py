"""Django system checks for the ``TRIGGERS`` setting and every declared
workflow (``manage.py check``, tag ``triggers``).

======================  ========================================================
id                      problem
======================  ========================================================
``triggers.E001``       ``TRIGGERS`` is not a dict
``triggers.E002``       a ``TRIGGERS`` value is invalid (numbers, choices,
                        registry keys, ``DEFAULT_WORKFLOW``, ``WORKFLOWS_DIR``)
``triggers.E003``       the cache alias for session state is not in ``CACHES``
``triggers.E004``       ``WORKFLOWS`` (or one workflow) is neither a dict nor a
                        file path
``triggers.E005``       a workflow file cannot be read, is not JSON, or holds
                        no JSON object
``triggers.E006``       a malformed directive (missing, misspelt, wrong type)
``triggers.E007``       ``using`` names an unknown task runner
``triggers.E008``       ``run`` names no registered ``TriggerTask``
``triggers.E009``       tasks wait on each other's cascades in a cycle
``triggers.W001``       an unknown ``TRIGGERS`` key (probably a typo)
``triggers.W002``       a non-Redis cache without ``REDIS_CLIENT``: sessions are
                        whole documents (the document tier), safe across
                        processes only where the cache's ``add()`` is atomic
``triggers.W003``       ``run`` is a bare task name that cannot be looked up yet
``triggers.E010``       instances go to Celery but no Celery app of the project is
                        loaded: ``fire()`` would publish with Celery's fallback
                        app (``amqp://localhost``)
``triggers.E011``       the Celery app's broker is not ``CELERY_BROKER_URL``
======================  ========================================================
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from . import conf
from .exceptions import ConfigurationError
from .workflows import Problem, configured_workflows, find_problems

__all__ = [
    "WORKFLOW_CHECK_IDS",
    "check_celery_app",
    "check_settings",
    "check_workflows",
    "problem_message",
]

#: Check id for each kind of workflow problem (see triggers.workflows.Problem).
WORKFLOW_CHECK_IDS = {
    "shape": "triggers.E004",
    "file": "triggers.E005",
    "directive": "triggers.E006",
    "using": "triggers.E007",
    "run": "triggers.E008",
    "cycle": "triggers.E009",
    "run-unverified": "triggers.W003",
}

_POSITIVE_NUMBERS = (
    "LOCK_EXPIRE",
    "LOCK_TIMEOUT",
    "LEASE_EXPIRE",
    "STUCK_AFTER",
    "MAX_KWARGS_BYTES",
)
_POSITIVE_OR_NONE = ("TIMEOUT", "BROKER_TIMEOUT")
_CHOICES = {"ON_LOST_SESSION": ("raise", "restart")}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid(key: str, message: str, hint: str | None = None) -> Error:
    return Error(f"TRIGGERS[{key!r}] {message}", hint=hint, obj="TRIGGERS", id="triggers.E002")


def _check_values(user: Mapping[str, Any]) -> list[CheckMessage]:
    from .manager import trigger_managers
    from .runners import task_runners
    from .storages import storage_backends

    found: list[CheckMessage] = []
    for key in user:
        if key not in conf.KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), sorted(conf.KNOWN_KEYS), n=1)
            found.append(
                Warning(
                    f"TRIGGERS has an unknown key {key!r}; it is ignored",
                    hint=f"Did you mean {close[0]!r}?" if close else None,
                    obj="TRIGGERS",
                    id="triggers.W001",
                )
            )
    for key in _POSITIVE_NUMBERS:
        value = conf.get(key)
        if not _is_number(value) or value <= 0:
            found.append(_invalid(key, f"must be a positive number, not {value!r}"))
    for key in _POSITIVE_OR_NONE:
        value = conf.get(key)
        if value is not None and (not _is_number(value) or value <= 0):
            found.append(_invalid(key, f"must be positive seconds or None, not {value!r}"))
    for key, choices in _CHOICES.items():
        if conf.get(key) not in choices:
            found.append(
                _invalid(
                    key, f"must be one of {', '.join(map(repr, choices))}, not {conf.get(key)!r}"
                )
            )
    registries: list[tuple[str, Any, bool]] = [
        ("MANAGER", trigger_managers, False),
        ("STORAGE", storage_backends, False),
        ("DEFAULT_RUNNER", task_runners, True),
    ]
    for key, registry, optional in registries:
        value = conf.get(key)
        if value is None and optional:
            continue
        try:
            registry.get_class(value)
        except (KeyError, ImportError, TypeError, AttributeError) as exc:
            close = difflib.get_close_matches(str(value), registry.keys(), n=1)
            found.append(
                _invalid(
                    key,
                    f"names nothing registered in {registry.group}: {exc}",
                    f"Did you mean {close[0]!r}?"
                    if close
                    else f"Use one of {', '.join(registry.keys())} or a dotted class path.",
                )
            )
    if not isinstance(conf.get("STORAGE_OPTIONS") or {}, Mapping):
        found.append(_invalid("STORAGE_OPTIONS", "must be a dict of keyword arguments"))
    directory = conf.get("WORKFLOWS_DIR")
    if directory is not None and not os.path.isdir(directory):
        found.append(_invalid("WORKFLOWS_DIR", f"is not a directory: {directory!r}"))
    return found


def _check_cache() -> list[CheckMessage]:
    from django.core.cache import caches

    from .locking import redis_client_for_cache
    from .storages import storage_backends
    from .storages.cache import CacheStorageBackend

    try:
        storage = storage_backends.get_class(conf.get("STORAGE"))
    except (KeyError, ImportError, TypeError, AttributeError):
        return []  # reported by _check_values
    if not (isinstance(storage, type) and issubclass(storage, CacheStorageBackend)):
        return []
    options = conf.get("STORAGE_OPTIONS") or {}
    alias = (options.get("cache") if isinstance(options, Mapping) else None) or conf.get("CACHE")
    if not conf.cache_configured(alias):
        return [
            Error(
                f"the cache alias {alias!r} that holds trigger sessions is not in CACHES",
                hint="Add a Redis cache under that alias to CACHES, or point TRIGGERS['CACHE'] "
                "at an existing one.",
                obj="TRIGGERS",
                id="triggers.E003",
            )
        ]
    if conf.get("REDIS_CLIENT"):
        return []
    try:
        client = redis_client_for_cache(caches[alias])
    except Exception:  # a cache that cannot even be built is Django's to report
        return []
    if client is None:
        return [
            Warning(
                f"the cache alias {alias!r} is not a Redis cache and TRIGGERS['REDIS_CLIENT'] "
                "is not set: sessions are then whole JSON documents written back only if "
                "unchanged, which is safe across processes only on a shared cache whose add() "
                "is atomic (Memcached, the database cache; not LocMem or the file cache), and "
                "every fire reads and writes the whole session",
                hint="Use a Redis cache (django.core.cache.backends.redis.RedisCache or "
                "django-redis) or set TRIGGERS['REDIS_CLIENT'] to a redis:// URL.",
                obj="TRIGGERS",
                id="triggers.W002",
            )
        ]
    return []


@register("triggers")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate the ``TRIGGERS`` setting."""
    user = conf.user_settings()
    if not isinstance(user, Mapping):
        return [
            Error(
                f"TRIGGERS must be a dict, not {type(user).__name__}",
                hint="See the settings reference for the keys TRIGGERS understands.",
                obj="TRIGGERS",
                id="triggers.E001",
            )
        ]
    return _check_values(user) + _check_cache()


def problem_message(problem: Problem) -> CheckMessage:
    """A workflow problem as a system-check message."""
    level = Error if problem.is_error else Warning
    where = "TRIGGERS['WORKFLOWS']"
    if problem.workflow is not None:
        where += f"[{problem.workflow!r}]"
    return level(
        problem_text(problem), hint=problem.hint, obj=where, id=WORKFLOW_CHECK_IDS[problem.kind]
    )


def problem_text(problem: Problem) -> str:
    """The problem's message without the "did you mean" its hint already says."""
    if problem.suggestion and problem.hint:
        return problem.message.replace(f" (did you mean {problem.suggestion!r}?)", "")
    return problem.message


@register("triggers")
def check_workflows(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate every workflow in ``TRIGGERS['WORKFLOWS']`` the way
    ``update_configuration`` would, and that their tasks are registered."""
    if not isinstance(conf.user_settings(), Mapping):
        return []  # E001
    try:
        workflows = configured_workflows()
    except ConfigurationError as exc:
        return [problem_message(Problem("shape", str(exc)))]
    found: list[CheckMessage] = []
    default = conf.get("DEFAULT_WORKFLOW")
    if default is not None and default not in workflows:
        found.append(
            _invalid(
                "DEFAULT_WORKFLOW",
                f"names no declared workflow: {default!r}",
                f"Declared: {', '.join(map(repr, workflows)) or 'none'}.",
            )
        )
    for name, source in workflows.items():
        if not isinstance(name, str) or not name:
            found.append(
                problem_message(Problem("shape", f"workflow names must be strings, not {name!r}"))
            )
            continue
        found += [problem_message(p) for p in find_problems(source, name)]
    return found


# -- the Celery app a fire would use ------------------------------------------


def _safe_url(url: Any) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(str(url)))


def _uses_celery() -> bool:
    from .runners import task_runners
    from .runners.base import default_runner
    from .runners.celery import CeleryTaskRunner

    choice = default_runner()
    if isinstance(choice, type):
        runner: Any = choice
    else:
        try:
            runner = task_runners.get_class(str(choice))
        except (KeyError, ImportError, TypeError, AttributeError):
            return False  # an unknown runner is E002
    return isinstance(runner, type) and issubclass(runner, CeleryTaskRunner)


def _project_app() -> Any:
    """The Celery app a fire in any thread of this process would use, or None
    when that would be Celery's fallback app (no project app was created, or
    it never became the default because ``DJANGO_SETTINGS_MODULE`` was unset
    when it was)."""
    from celery import _state

    app = _state.default_app
    if app is None or (app.main == "default" and not app.fixups):
        return None
    return app


@register("triggers")
def check_celery_app(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Instances go to the project's Celery app and its configured broker.

    A project package that does not import its Celery app (``from .celery
    import app as celery_app``) leaves Celery's fallback app in charge: its
    broker is ``amqp://localhost``, so messages go where no worker listens.
    """
    from django.conf import settings

    if not isinstance(conf.user_settings(), Mapping) or not _uses_celery():
        return []
    app = _project_app()
    if app is None:
        from celery import _state

        local = getattr(_state._tls, "current_app", None)
        if local is not None and local.main != "default":
            problem = (
                f"the Celery app {local.main!r} is current only in the thread that created "
                "it (DJANGO_SETTINGS_MODULE was not set yet, so Celery's Django support did "
                "not make it the default): fire() in any other thread, such as a web "
                "request's, would send"
            )
        else:
            problem = "no Celery app of the project is loaded in this process: fire() would send"
        return [
            Error(
                f"{problem} ready instances with Celery's default app, whose broker is "
                "amqp://guest@localhost// and not your CELERY_BROKER_URL",
                hint="Create the Celery app in <project>/celery.py after "
                "os.environ.setdefault('DJANGO_SETTINGS_MODULE', ...) and import it in "
                "<project>/__init__.py: `from .celery import app as celery_app` "
                "(see Getting started).",
                obj="celery",
                id="triggers.E010",
            )
        ]
    configured = getattr(settings, "CELERY_BROKER_URL", None)
    actual = app.conf.broker_url
    if configured and actual != configured:
        return [
            Error(
                f"the Celery app {app.main!r} sends to broker "
                f"{_safe_url(actual) if actual else 'amqp://guest@localhost// (default)'}, "
                f"not CELERY_BROKER_URL {_safe_url(configured)}",
                hint="Configure the app from Django's settings: "
                "app.config_from_object('django.conf:settings', namespace='CELERY'); "
                "a CELERY_BROKER_URL environment variable also overrides the setting.",
                obj="celery",
                id="triggers.E011",
            )
        ]
    return []
