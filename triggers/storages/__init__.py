"""Storage backends and their registry (entry point group ``triggers.storages``)."""

from __future__ import annotations

from ..registry import Registry
from .base import BaseTriggerStorage

__all__ = ["BaseTriggerStorage", "storage_backends"]

storage_backends: Registry[BaseTriggerStorage] = Registry(
    "triggers.storages",
    {
        "cache": "triggers.storages.cache.CacheStorageBackend",
        "database": "triggers.storages.database.DatabaseStorageBackend",
    },
    base=BaseTriggerStorage,
)
