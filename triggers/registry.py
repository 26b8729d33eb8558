"""Registries of pluggable classes, filled from built-ins, setuptools entry
points and explicit :meth:`Registry.register` calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from django.utils.module_loading import import_string

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps keys to classes; ``get(key, *args, **kwargs)`` builds an instance.

    A key is a registered name (``'celery'``) or, as a fallback, the dotted
    path of a class, so an unregistered custom class can still be rebuilt in
    a worker.
    """

    def __init__(self, group: str, builtins: dict[str, str]) -> None:
        self.group = group
        self._builtins = dict(builtins)
        self._classes: dict[str, type[T]] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            found: dict[str, Any] = dict(self._builtins)
            for ep in entry_points(group=self.group):
                found.setdefault(ep.name, ep)
            self._entries = found
            self._loaded = True

    def register(self, key: str, cls: type[T] | None = None) -> Any:
        """Register ``cls`` under ``key``; usable as a class decorator."""

        def decorate(klass: type[T]) -> type[T]:
            self._classes[key] = klass
            return klass

        return decorate(cls) if cls is not None else decorate

    def keys(self) -> list[str]:
        self._load()
        return sorted(set(self._entries) | set(self._classes))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get_class(self, key: str) -> type[T]:
        if key in self._classes:
            return self._classes[key]
        self._load()
        entry = self._entries.get(key)
        if entry is None:
            if "." in key:
                try:
                    cls = import_string(key)
                except ImportError as exc:
                    raise KeyError(f"{self.group}: cannot import {key!r}: {exc}") from None
            else:
                raise KeyError(
                    f"{self.group}: nothing registered as {key!r}; known: {', '.join(self.keys())}"
                )
        elif isinstance(entry, str):
            cls = import_string(entry)
        else:
            cls = entry.load()
        self._classes[key] = cls
        return cls

    def get(self, key: str, *args: Any, **kwargs: Any) -> T:
        return self.get_class(key)(*args, **kwargs)

    def key_for(self, cls: type) -> str:
        """The key a worker should use to rebuild an instance of ``cls``."""
        name = getattr(cls, "name", None)
        if isinstance(name, str) and name in self:
            try:
                if self.get_class(name) is cls:
                    return name
            except KeyError:
                pass
        return f"{cls.__module__}.{cls.__qualname__}"
