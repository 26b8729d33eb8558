"""Payload conditions (the ``if`` directive) and trigger groups (``anyOf`` and
``atLeast`` inside ``after`` and ``unless``), apart from any I/O.

A :class:`Rule` is what an ``after`` or ``unless`` list asks for: plain
names (every one must fire) and :class:`Group` s (``need`` of ``of`` must
fire). The rule answers the engine's questions about one instance from the
names it has received: is it met, which names is it still worth waiting on
(members of a group that is already satisfied are not), and how far along is
it. Rules are built from the stored JSON with :func:`rule_of` (trusted) or
from user input with :func:`parse_rule` (validated, raising
:class:`~triggers.exceptions.ConfigurationError`).

Conditions are CEL expressions (``common-expression-language``), compiled
once per expression string and process (:func:`program`), evaluated with
``kwargs`` bound to the fire's kwargs (:func:`evaluate`). Nothing here is
``eval``-ed Python: an expression is data, stored as the string written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from .exceptions import ConfigurationError, InvalidTriggerError, InvalidTriggerTypeError
from .validation import check_name

__all__ = [
    "Group",
    "Rule",
    "check_conditions",
    "counts_for",
    "evaluate",
    "parse_rule",
    "passing",
    "program",
    "rule_of",
]

#: The one variable an expression sees: the fire's kwargs.
VARIABLE = "kwargs"
MAX_EXPRESSION_LENGTH = 2000
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


@dataclass(frozen=True)
class Group:
    """``need`` of the trigger names ``of`` (sorted, distinct) must fire.
    ``kind`` keeps the spelling: ``'anyOf'`` (``need`` is 1) or ``'atLeast'``."""

    need: int
    of: tuple[str, ...]
    kind: str = "anyOf"

    def count(self, received: Collection[str]) -> int:
        return sum(1 for name in self.of if name in received)

    def met(self, received: Collection[str]) -> bool:
        return self.count(received) >= self.need

    def to_json(self) -> dict[str, Any]:
        if self.kind == "anyOf":
            return {"anyOf": list(self.of)}
        return {"atLeast": self.need, "of": list(self.of)}

    def describe(self) -> str:
        """``any of a, b`` or ``2 of a, b, c``."""
        head = "any of" if self.kind == "anyOf" else f"{self.need} of"
        return f"{head} {', '.join(self.of)}"


@dataclass(frozen=True)
class Rule:
    """What an ``after`` or ``unless`` list asks for."""

    plain: frozenset[str] = frozenset()
    groups: tuple[Group, ...] = ()

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Every trigger name the rule mentions."""
        return self.plain.union(*(g.of for g in self.groups))

    def __bool__(self) -> bool:
        return bool(self.plain or self.groups)

    def met(self, received: Collection[str]) -> bool:
        """Whether names ``received`` satisfy every requirement."""
        if not self.plain.issubset(received):
            return False
        return all(g.met(received) for g in self.groups)

    def missing(self, received: Collection[str]) -> set[str]:
        """The names still worth receiving: plain ones not received yet and
        the unreceived members of groups not yet satisfied."""
        out = set(self.plain)
        if received:
            out.difference_update(received)
        for group in self.groups:
            if not group.met(received):
                out.update(name for name in group.of if name not in received)
        return out

    def progress(self, received: Collection[str]) -> tuple[int, int]:
        """(requirements satisfied, requirements): each plain name and each
        group is one requirement."""
        done = sum(1 for name in self.plain if name in received)
        done += sum(1 for g in self.groups if g.met(received))
        return done, len(self.plain) + len(self.groups)

    def pending(self, received: Collection[str]) -> list[str]:
        """The requirements not met yet, as words: ``['c', 'any of x, y']``."""
        words = sorted(name for name in self.plain if name not in received)
        return words + [g.describe() for g in self.groups if not g.met(received)]

    def describe(self) -> list[str]:
        return sorted(self.plain) + [g.describe() for g in self.groups]

    def to_json(self) -> list[Any]:
        """The directive's JSON form: sorted names, then the groups."""
        return [*sorted(self.plain), *(g.to_json() for g in self.groups)]


def rule_of(items: Iterable[Any], extra: str | None = None) -> Rule:
    """A rule from trusted items (names, :class:`Group` s or their JSON);
    ``extra`` adds a plain name (``andEvery``)."""
    if isinstance(items, Rule):
        return _with(items, extra)
    plain: set[str] = set()
    groups: list[Group] = []
    for item in items:
        if isinstance(item, str):
            plain.add(item)
        elif isinstance(item, Group):
            groups.append(item)
        elif "anyOf" in item:
            groups.append(Group(1, tuple(sorted(set(item["anyOf"])))))
        else:
            groups.append(Group(int(item["atLeast"]), tuple(sorted(set(item["of"]))), "atLeast"))
    return _with(Rule(frozenset(plain), _ordered(groups)), extra)


def _with(rule: Rule, extra: str | None) -> Rule:
    if extra is None or extra in rule.plain:
        return rule
    return Rule(rule.plain | {extra}, rule.groups)


def _ordered(groups: Iterable[Group]) -> tuple[Group, ...]:
    unique = {(g.kind, g.need, g.of): g for g in groups}
    return tuple(unique[k] for k in sorted(unique))


# -- validating user input ------------------------------------------------------

_SHAPES = 'a trigger name, {"anyOf": [names]} or {"atLeast": k, "of": [names]}'


def _member_names(task: str, directive: str, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigurationError(
            f"{where} must list trigger names, not {value!r} (write [{value!r}])"
            if isinstance(value, str)
            else f"{where} must list trigger names, not {type(value).__name__}",
            task=task,
            directive=directive,
        )
    if not value:
        raise ConfigurationError(
            f"{where} is empty; name at least one trigger", task=task, directive=directive
        )
    names: list[str] = []
    for item in value:
        try:
            names.append(check_name(item, "trigger name"))
        except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
            raise ConfigurationError(f"{where}: {exc}", task=task, directive=directive) from None
        if names.count(item) > 1:
            raise ConfigurationError(
                f"{where} names {item!r} twice; list each trigger once",
                task=task,
                directive=directive,
            )
    return tuple(sorted(names))


def parse_group(task: str, directive: str, item: Any) -> Group:
    """Validate one group of ``after``/``unless``."""
    if not isinstance(item, Mapping):
        raise ConfigurationError(
            f"each entry must be {_SHAPES}; got {type(item).__name__} {item!r}",
            task=task,
            directive=directive,
        )
    keys = set(item)
    if keys == {"anyOf"}:
        return Group(1, _member_names(task, directive, "anyOf", item["anyOf"]))
    if keys == {"atLeast", "of"}:
        of = _member_names(task, directive, "atLeast's 'of'", item["of"])
        need = item["atLeast"]
        if isinstance(need, bool) or not isinstance(need, int):
            raise ConfigurationError(
                f"atLeast must be a whole number, not {need!r}", task=task, directive=directive
            )
        if not 1 <= need <= len(of):
            raise ConfigurationError(
                f"atLeast {need} of {len(of)} trigger(s) can never be met; "
                f"use a number from 1 to {len(of)}",
                task=task,
                directive=directive,
            )
        return Group(need, of, "atLeast")
    hint = ""
    lowered = {str(k).lower(): k for k in keys}
    if "anyof" in lowered and lowered["anyof"] != "anyOf":
        hint = f" (write 'anyOf', not {lowered['anyof']!r})"
    elif "atLeast" in keys and "of" not in keys:
        hint = ' (atLeast needs "of": the list of trigger names)'
    elif "of" in keys and "atLeast" not in keys:
        hint = ' ("of" needs "atLeast": how many of them must fire)'
    raise ConfigurationError(
        f"a group must be {{'anyOf': [names]}} or {{'atLeast': k, 'of': [names]}}; "
        f"got keys {sorted(map(str, keys))}{hint}",
        task=task,
        directive=directive,
    )


def parse_rule(task: str, directive: str, value: Any) -> Rule:
    """Validate an ``after`` or ``unless`` list (names and groups)."""
    if isinstance(value, str):
        raise ConfigurationError(
            f"must be a list of trigger names, not the string {value!r} (write [{value!r}])",
            task=task,
            directive=directive,
        )
    if isinstance(value, Mapping):
        raise ConfigurationError(
            f"must be a list; put the group in one: [{dict(value)!r}]",
            task=task,
            directive=directive,
        )
    if not isinstance(value, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"must be a list of trigger names, not {type(value).__name__}",
            task=task,
            directive=directive,
        )
    plain: set[str] = set()
    groups: list[Group] = []
    for item in value:
        if isinstance(item, Mapping):
            groups.append(parse_group(task, directive, item))
            continue
        try:
            plain.add(check_name(item, "trigger name"))
        except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
            raise ConfigurationError(
                f"{exc}; each entry must be {_SHAPES}", task=task, directive=directive
            ) from None
    for group in groups:
        overlap = sorted(plain.intersection(group.of))
        if overlap:
            raise ConfigurationError(
                f"{overlap[0]!r} is both required on its own and a member of "
                f"'{group.describe()}'; drop it from one of them",
                task=task,
                directive=directive,
            )
    return Rule(frozenset(plain), _ordered(groups))


# -- conditions ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def program(expression: str) -> cel.Program:
    """The compiled program of ``expression`` (once per process and string).
    Raises ``ValueError`` for a syntax error."""
    return cel.compile(expression)


def compile_condition(task: str, trigger: str, expression: Any) -> cel.Program:
    """Check one ``if`` entry; raises :class:`ConfigurationError` naming the
    task and trigger."""
    where = f"the condition on {trigger!r}"
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigurationError(
            f"{where} must be a CEL expression (a non-empty string), not {expression!r}; "
            f'e.g. {{"{trigger}": "kwargs.amount > 100"}}',
            task=task,
            directive="if",
        )
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ConfigurationError(
            f"{where} is {len(expression)} characters long; the limit is {MAX_EXPRESSION_LENGTH}",
            task=task,
            directive="if",
        )
    try:
        compiled = program(expression)
    except ValueError as exc:
        raise ConfigurationError(
            f"{where} is not a valid CEL expression: {exc}", task=task, directive="if"
        ) from None
    # ``variables()`` also lists the names comprehension macros bind
    # (``kwargs.items.exists(i, i > 1)``); those are not unknown.
    bound = set(_MACRO_VARIABLE.findall(expression))
    unknown = sorted(set(compiled.variables()) - {VARIABLE} - bound)
    if unknown:
        raise ConfigurationError(
            f"{where} uses unknown variable(s) {', '.join(unknown)}; an expression sees only "
            f"'kwargs' (the fire's kwargs), e.g. kwargs.{unknown[0]}",
            task=task,
            directive="if",
        )
    return compiled


def check_conditions(task: str, value: Any, mentioned: Collection[str]) -> dict[str, str]:
    """Validate an ``if`` directive: ``{trigger: expression}`` for triggers
    the task mentions (in ``after``, ``unless`` or ``andEvery``)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"must map trigger names to CEL expressions, not {type(value).__name__}; "
            'e.g. {"paymentReceived": "kwargs.amount > 100"}',
            task=task,
            directive="if",
        )
    out: dict[str, str] = {}
    for trigger, expression in value.items():
        if not isinstance(trigger, str) or trigger not in mentioned:
            raise ConfigurationError(
                f"has a condition on {trigger!r}, which the task does not wait on; "
                "add it to 'after' or 'unless', or remove the condition",
                task=task,
                directive="if",
            )
        compile_condition(task, trigger, expression)
        out[trigger] = expression
    return out


def evaluate(expression: str, kwargs: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether a fire with ``kwargs`` passes ``expression``: ``(result,
    None)``, or ``(False, reason)`` when evaluating it failed (a missing key,
    a type mismatch, a result that is not a bool)."""
    try:
        result = program(expression).execute({VARIABLE: dict(kwargs)})
    except (LookupError, TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        missing = isinstance(exc, KeyError)
        reason = f"no key {exc} in the kwargs" if missing else f"{type(exc).__name__}: {exc}"
        return False, reason
    if not isinstance(result, bool):
        return False, f"the result is {type(result).__name__} {result!r}, not true or false"
    return result, None


def counts_for(
    conditions: Mapping[str, str], trigger: str, kwargs: Mapping[str, Any]
) -> tuple[bool, str | None]:
    """Whether a fire of ``trigger`` with ``kwargs`` counts for a task with
    these ``if`` ``conditions``: ``(True, None)`` when it has no condition
    on ``trigger``; else :func:`evaluate`'s answer."""
    expression = conditions.get(trigger)
    if expression is None:
        return True, None
    return evaluate(expression, kwargs)


def passing(conditions: Mapping[str, str], seed: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``seed`` (trigger -> latest kwargs) whose condition
    holds: what a new instance may start with. A failing evaluation leaves
    the entry out (it was reported when that fire was applied)."""
    if not conditions:
        return dict(seed)
    return {t: kw for t, kw in seed.items() if counts_for(conditions, t, kw)[0]}
