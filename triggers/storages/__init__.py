"""Storage backends and their registry (entry point group ``triggers.storages``)."""

from __future__ import annotations

from ..registry import Registry
from .base import BaseTriggerStorage, IndexedStorage
from .document import DocumentStorage

# The two classes behind the 'cache' name register themselves on import.
from .redis import RedisStorageBackend

__all__ = [
    "BaseTriggerStorage",
    "DocumentStorage",
    "IndexedStorage",
    "RedisStorageBackend",
    "storage_backends",
]

storage_backends: Registry[BaseTriggerStorage] = Registry(
    "triggers.storages",
    {
        "cache": "triggers.storages.cache.CacheStorageBackend",
        "database": "triggers.storages.database.DatabaseStorageBackend",
    },
    base=BaseTriggerStorage,
)
