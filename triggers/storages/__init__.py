"""Storage backends and their registry (entry point group ``triggers.storages``)."""

from __future__ import annotations

from ..registry import Registry
from .base import BaseTriggerStorage, IndexedStorage
from .cache import CacheStorageBackend
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


class StorageRegistry(Registry[BaseTriggerStorage]):
    """The storage registry: the classes behind ``'cache'`` (Redis or
    document, picked by the cache) are rebuilt by that name, so a worker
    picks again for its own settings."""

    def key_for(self, cls: type) -> str:
        if cls in CacheStorageBackend.kinds():
            cls = CacheStorageBackend
        return super().key_for(cls)


storage_backends: Registry[BaseTriggerStorage] = StorageRegistry(
    "triggers.storages",
    {
        "cache": "triggers.storages.cache.CacheStorageBackend",
        "database": "triggers.storages.database.DatabaseStorageBackend",
    },
    base=BaseTriggerStorage,
)
