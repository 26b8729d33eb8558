"""Distributed observer pattern for Django + Celery: fire named triggers for a
session from any process, run Celery tasks once the right set has fired.

The names below are importable from the package root, as in the original
framework (``from triggers import TriggerManager, CacheStorageBackend``).
They load on first use, so ``import triggers`` (e.g. from a settings module)
needs no configured Django.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_LAZY = {
    "TriggerManager": "triggers.manager",
    "trigger_managers": "triggers.manager",
    "BaseTriggerStorage": "triggers.storages.base",
    "CacheStorageBackend": "triggers.storages.cache",
    "storage_backends": "triggers.storages",
    "get_trigger_manager": "triggers.shortcuts",
    "start_session": "triggers.shortcuts",
}

__all__ = [
    "BaseTriggerStorage",
    "CacheStorageBackend",
    "TriggerManager",
    "get_trigger_manager",
    "start_session",
    "storage_backends",
    "trigger_managers",
]

if TYPE_CHECKING:
    from .manager import TriggerManager, trigger_managers
    from .shortcuts import get_trigger_manager, start_session
    from .storages import storage_backends
    from .storages.base import BaseTriggerStorage
    from .storages.cache import CacheStorageBackend


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'triggers' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
