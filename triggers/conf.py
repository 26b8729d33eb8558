"""The ``TRIGGERS`` setting, read in one place.

Every key is optional; :data:`DEFAULTS` documents them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Cache alias that holds session state (a Redis cache in production).
    "CACHE": "default",
    # Seconds a session lives after its last change; None keeps it forever.
    # Absent: the cache alias's own default timeout.
    # "TIMEOUT": None,
    # Seconds before an unrenewed session lock expires (a crashed holder
    # blocks the session at most this long, plus LOCK_POLL).
    "LOCK_EXPIRE": 4,
    # Longest wait for a session lock before LockTimeoutError.
    "LOCK_TIMEOUT": 30,
    # Seconds a worker's claim on a running instance lasts without renewal.
    "LEASE_EXPIRE": 10,
    # Redis client for session state and locks, whatever the cache alias: a
    # redis:// URL, redis+cluster://host:port for a Redis Cluster, or the
    # dotted path of a callable returning a client. None: the cache's own.
    "REDIS_CLIENT": None,
    # Registry keys used by triggers.shortcuts.get_trigger_manager(): a
    # registered name or the dotted path of a class.
    "MANAGER": "default",
    "STORAGE": "cache",
    # Extra keyword arguments for the storage class (besides the uid).
    "STORAGE_OPTIONS": {},
    # Runner for tasks without 'using'; None keeps the manager's own default.
    "DEFAULT_RUNNER": None,
    # Seconds a Redis broker socket may block when publishing a task (set on
    # the Celery app's transport options unless they already say); a hung
    # broker then fails the dispatch instead of blocking the fire. None: off.
    "BROKER_TIMEOUT": 5,
    # Largest trigger kwargs accepted by fire(), in bytes of JSON.
    "MAX_KWARGS_BYTES": 256 * 1024,
    # Deepest nesting of lists/dicts accepted in trigger kwargs (and task
    # results); deeper input is refused before anything is stored.
    "MAX_KWARGS_DEPTH": 64,
    # What fire() does in a session that has no configuration: 'warn'
    # (record the trigger, log a WARNING), 'raise' (SessionNotConfiguredError,
    # nothing stored) or 'record' (record it silently, as the original did).
    "ON_UNCONFIGURED": "warn",
    # Seconds one Redis call of a session operation may block (socket and
    # connect timeout of the client triggers uses, unless the cache's own
    # client sets one). None: the client's own setting.
    "REDIS_TIMEOUT": 5,
    # Seconds a whole session operation (lock wait included) may take before
    # SessionTimeoutError; should exceed LOCK_TIMEOUT.
    "OPERATION_TIMEOUT": 45,
    # How often a worker retries (with exponential backoff from 0.5 s) when
    # the session cannot be reached to claim or record an instance, before it
    # gives up and marks the instance failed.
    "WORKER_RETRIES": 5,
    # What fire() does when a session this process saw has vanished:
    # 'raise' (SessionLostError) or 'restart' (start over, log a warning).
    "ON_LOST_SESSION": "raise",
    # Named workflows: name -> configuration dict, or a path to a JSON file
    # (relative paths are resolved against WORKFLOWS_DIR).
    "WORKFLOWS": {},
    # Base directory of relative workflow file paths; None: settings.BASE_DIR
    # when the project defines it, else the current directory.
    "WORKFLOWS_DIR": None,
    # Workflow start_session() uses when none is named.
    "DEFAULT_WORKFLOW": None,
    # Instances in 'scheduled' or 'running' longer than this many seconds are
    # reported as stuck by triggers_inspect.
    "STUCK_AFTER": 600,
    # Who may use the web inspector (triggers.urls): the dotted path of a
    # callable(request) -> bool; None: active staff users.
    "INSPECTOR_PERMISSION": None,
    # Seconds an idempotency key of fire(..., idempotency_key=...) is
    # remembered per session (a repeat within it changes nothing).
    "IDEMPOTENCY_WINDOW": 7 * 24 * 3600,
    "IDEMPOTENCY_MAX_KEYS": 10_000,  # most keys a session keeps (oldest go first)
}


#: Every key ``TRIGGERS`` understands (``TIMEOUT`` has no default on purpose).
KNOWN_KEYS = frozenset(DEFAULTS) | {"TIMEOUT"}


#: The instance dictionary of Django's lazy settings object, where it keeps
#: each setting after its first read (and drops it when the setting is
#: assigned, deleted or overridden: the dictionary is emptied in place).
_READ_SETTINGS: dict[str, Any] = object.__getattribute__(settings, "__dict__")


def _triggers() -> Any:
    # Read on every call, so a TRIGGERS replaced at run time (assigned, or by
    # override_settings) is seen at once. After its first read the lazy
    # settings object holds the value in its dictionary: taken from there,
    # it costs a dictionary lookup rather than the object's Python-level
    # attribute hooks (a fire reads the setting several times).
    user = _READ_SETTINGS.get("TRIGGERS")
    if user is None:
        user = getattr(settings, "TRIGGERS", None)
    return user or {}


def get(key: str) -> Any:
    """One ``TRIGGERS`` value, falling back to :data:`DEFAULTS`."""
    user = _triggers()
    if key in user:
        return user[key]
    return DEFAULTS.get(key)


def get_many(*keys: str) -> tuple[Any, ...]:
    """Several ``TRIGGERS`` values (as :func:`get`), reading the setting once."""
    user = _triggers()
    values = []  # (a loop, not a generator: read a few times per fire)
    for key in keys:
        values.append(user[key] if key in user else DEFAULTS.get(key))
    return tuple(values)


def has(key: str) -> bool:
    return key in _triggers()


def user_settings() -> Any:
    """The raw ``TRIGGERS`` setting as the project wrote it (``{}`` if absent);
    the system checks validate its shape."""
    return _triggers()


def workflows_dir() -> str:
    """Directory that relative workflow file paths are resolved against."""
    configured = get("WORKFLOWS_DIR")
    if configured:
        return str(configured)
    base = getattr(settings, "BASE_DIR", None)
    return str(base) if base else "."


def cache_configured(alias: str) -> bool:
    return alias in getattr(settings, "CACHES", {})
