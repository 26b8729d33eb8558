"""Registries of pluggable classes, filled from built-ins, setuptools entry
points and explicit :meth:`Registry.register` calls, and the registries of
trigger managers and task runners themselves.

A registry only ever builds subclasses of its base class. Keys can arrive in
worker messages, which anyone who can write to the broker can forge, so a key
that is not registered is accepted only as the dotted path of an importable
class of the right type; nothing else named by a key is ever called.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from .manager import TriggerManager
    from .runners.base import BaseTaskRunner

__all__ = ["Registry", "task_runners", "trigger_managers"]

T = TypeVar("T")

logger = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Maps keys to classes; ``get(key, *args, **kwargs)`` builds an instance.

    A key is a registered name (``'celery'``) or, as a fallback, the dotted
    path of a subclass of ``base``, so an unregistered custom class defined at
    module level can still be rebuilt in a worker. ``base`` is a class or its
    dotted path (resolved on first use, so registries can be declared before
    their base class is importable).
    """

    def __init__(self, group: str, builtins: dict[str, str], base: type | str = object) -> None:
        self.group = group
        self._builtins = dict(builtins)
        self._classes: dict[str, type[T]] = {}
        self._loaded = False
        self._lock = threading.Lock()
        self._base = base

    @property
    def base(self) -> type:
        if isinstance(self._base, str):
            self._base = _import_path(self._base)
        assert isinstance(self._base, type)
        return self._base

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

    def _check(self, key: str, cls: Any) -> type[T]:
        base = self.base
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise KeyError(
                f"{self.group}: {key!r} is not a subclass of {base.__module__}.{base.__qualname__}"
            )
        return cast("type[T]", cls)

    def register(self, key: str, cls: type[T] | None = None) -> Any:
        """Register ``cls`` under ``key``; usable as a class decorator."""

        def decorate(klass: type[T]) -> type[T]:
            self._classes[key] = self._check(key, klass)
            return klass

        return decorate(cls) if cls is not None else decorate

    def keys(self) -> list[str]:
        self._load()
        return sorted(set(self._entries) | set(self._classes))

    def __contains__(self, key: object) -> bool:
        # Asked on every publish (key_for): no sorted list of keys.
        if not isinstance(key, str):
            return False
        self._load()
        return key in self._classes or key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get_class(self, key: str, *, load_modules: bool = True) -> type[T]:
        """The class registered as ``key`` (or at dotted path ``key``).

        Raises ``KeyError`` for anything else, before calling anything that
        is not a subclass of the registry's base class. With
        ``load_modules=False`` (keys from worker messages) a dotted path is
        only looked up in modules this process imported already, so a forged
        key cannot make it import anything.
        """
        if not isinstance(key, str):
            raise KeyError(f"{self.group}: keys are strings, not {type(key).__name__}")
        found = self._classes.get(key)
        if found is not None:
            return found
        self._load()
        entry = self._entries.get(key)
        if entry is None:
            if "." not in key:
                raise KeyError(
                    f"{self.group}: nothing registered as {key!r}; known: {', '.join(self.keys())}"
                )
            cls = self._import_class(key, load_modules)
        elif isinstance(entry, str):
            cls = _import_path(entry)
        else:
            cls = entry.load()
        cls = self._check(key, cls)
        self._classes[key] = cls
        return cls

    def _import_class(self, path: str, load_modules: bool) -> Any:
        """The attribute a dotted path names, looked up without calling
        anything on the way: ``module.Class`` or ``module.Class.Inner``."""
        if "<" in path or not all(part.isidentifier() for part in path.split(".")):
            raise KeyError(f"{self.group}: {path!r} is not the dotted path of an importable class")
        parts = path.split(".")
        # The longest prefix that is a module; what follows are class attributes.
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            module = sys.modules.get(module_name)
            if module is None:
                if not load_modules:
                    if cut == 1:
                        raise KeyError(
                            f"{self.group}: cannot import {path!r}: its module is not loaded "
                            "in this process (register the class to rebuild it here)"
                        )
                    continue
                try:
                    module = importlib.import_module(module_name)
                except ImportError as exc:
                    if cut == 1:
                        raise KeyError(f"{self.group}: cannot import {path!r}: {exc}") from None
                    continue
            target: Any = module
            for name in parts[cut:]:
                if not isinstance(target, type) and target is not module:
                    raise KeyError(f"{self.group}: {path!r} is not a class")
                # getattr_static: no properties or __getattr__ hooks run.
                try:
                    target = _static_attr(target, name)
                except AttributeError:
                    raise KeyError(f"{self.group}: cannot import {path!r}: no {name!r}") from None
            return target
        raise KeyError(f"{self.group}: cannot import {path!r}")

    def get(self, key: str, *args: Any, **kwargs: Any) -> T:
        """Build an instance of the class :meth:`get_class` finds for ``key``."""
        return self.get_class(key)(*args, **kwargs)

    def key_for(self, cls: type) -> str:
        """The key a worker should use to rebuild an instance of ``cls``."""
        name = getattr(cls, "name", None)
        if isinstance(name, str) and name in self:
            try:
                if self.get_class(name) is cls:
                    return name
            except KeyError:
                pass  # that name builds nothing here: look for another key below
        for key, registered in list(self._classes.items()):
            if registered is cls and "." not in key:
                return key
        return f"{cls.__module__}.{cls.__qualname__}"

    def rebuildable(self, cls: type) -> bool:
        """Whether another process can rebuild ``cls`` from :meth:`key_for`
        (a registered key, or the dotted path of a module-level class)."""
        key = self.key_for(cls)
        if "." not in key:
            return True
        return cls.__module__ != "__main__" and "<" not in key

    def fallbacks_for(self, cls: type) -> list[str]:
        """Keys of the registered ancestors of ``cls``, nearest first: what a
        worker falls back to when it cannot rebuild ``cls`` itself."""
        found: list[str] = []
        for ancestor in cls.__mro__[1:]:
            if isinstance(ancestor, type) and issubclass(ancestor, self.base):
                key = self.key_for(ancestor)
                if "." not in key and key not in found:
                    found.append(key)
        return found

    def get_class_or_fallback(self, key: str, fallbacks: Iterable[str] = ()) -> type[T]:
        """:meth:`get_class` without loading modules (for keys from worker
        messages), or else the first of ``fallbacks`` (registered keys only)
        that works, with a WARNING naming both."""
        try:
            return self.get_class(key, load_modules=False)
        except KeyError as exc:
            for fallback in fallbacks:
                if not isinstance(fallback, str) or "." in fallback:
                    continue
                try:
                    cls = self.get_class(fallback)
                except KeyError:
                    continue
                logger.warning(
                    "%s: cannot rebuild %r here (%s); using its registered ancestor %r instead",
                    self.group,
                    key,
                    exc.args[0] if exc.args else exc,
                    fallback,
                )
                return cls
            raise


def _import_path(path: str) -> Any:
    """The attribute ``module.name`` names (a built-in's dotted path)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _static_attr(target: Any, name: str) -> Any:
    import inspect

    value = inspect.getattr_static(target, name)
    if isinstance(value, staticmethod | classmethod | property):
        raise AttributeError(name)
    return value


# Declared here, below everything that reads them, with their classes named
# by dotted path: a worker message names its manager by this registry's key
# (runners build messages), and a task's ``using`` is checked against the
# runner registry (configuration validation).

#: Trigger managers (entry point group ``triggers.managers``); also
#: importable from :mod:`triggers.manager`.
trigger_managers: Registry[TriggerManager] = Registry(
    "triggers.managers",
    {"default": "triggers.manager.TriggerManager"},
    base="triggers.manager.TriggerManager",
)

#: Task runners (entry point group ``triggers.runners``); also importable
#: from :mod:`triggers.runners`.
task_runners: Registry[BaseTaskRunner] = Registry(
    "triggers.runners",
    {
        "celery": "triggers.runners.celery.CeleryTaskRunner",
        "threading": "triggers.runners.threading.ThreadingTaskRunner",
    },
    base="triggers.runners.base.BaseTaskRunner",
)
