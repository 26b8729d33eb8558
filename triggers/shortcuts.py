"""One-call helpers for views: a manager for a session, built from the
``TRIGGERS`` settings, and starting a session on a declared workflow.

.. code-block:: python

    from triggers.shortcuts import get_trigger_manager, start_session

    start_session(f"questionnaire:{pk}", workflow="questionnaire")  # once
    get_trigger_manager(f"questionnaire:{pk}").fire("pageReceived", {...})
"""

from __future__ import annotations

from typing import Any

from . import conf
from .manager import TriggerManager, trigger_managers
from .storages import storage_backends
from .workflows import get_workflow

__all__ = ["get_trigger_manager", "start_session"]


def get_trigger_manager(
    uid: str, manager: str | None = None, storage: str | None = None, **storage_kwargs: Any
) -> TriggerManager:
    """A manager for session ``uid``.

    ``manager`` and ``storage`` are registry keys (or dotted class paths);
    they default to ``TRIGGERS['MANAGER']`` and ``TRIGGERS['STORAGE']``, so a
    project can swap either at runtime or in settings. ``storage_kwargs`` are
    merged over ``TRIGGERS['STORAGE_OPTIONS']`` and passed to the storage
    class (e.g. ``cache='triggers'``).
    """
    options = dict(conf.get("STORAGE_OPTIONS") or {})
    options.update(storage_kwargs)
    backend = storage_backends.get(storage or conf.get("STORAGE"), uid, **options)
    return trigger_managers.get(manager or conf.get("MANAGER"), backend)


def start_session(
    uid: str,
    workflow: str | None = None,
    *,
    manager: str | None = None,
    storage: str | None = None,
    **storage_kwargs: Any,
) -> TriggerManager:
    """Configure session ``uid`` with a workflow declared in
    ``TRIGGERS['WORKFLOWS']`` (default ``TRIGGERS['DEFAULT_WORKFLOW']``) and
    return its manager.

    Safe to call again: tasks are replaced by the same ones, and triggers
    already fired are kept. The workflow's name is recorded in the session
    metadata (``storage.metadata['workflow']``) for the operator commands.
    Raises :class:`~triggers.exceptions.ConfigurationError` (naming the
    workflow, task and directive) and stores nothing if the workflow is invalid.
    """
    name = workflow or conf.get("DEFAULT_WORKFLOW")
    configuration = get_workflow(name)
    result = get_trigger_manager(uid, manager, storage, **storage_kwargs)
    with result.storage.transaction() as txn:
        result.update_configuration(configuration)
        txn.touch_meta(workflow=name)
    return result
