"""The reference model and the random workflows of the property tests
(tests/test_properties.py, tests/test_property_timers.py,
tests/test_engine.py): SPEC §3 and §14 (groups, ``if`` conditions, delayed
fires, deadlines) written as plainly as possible, sequentially, with no
storage and none of the library's rule code -- only its CEL evaluator, so a
condition means the same thing to both."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import strategies as st

from triggers.conditions import evaluate
from triggers.testing import DevNullTask

EXTERNAL = ["e0", "e1", "e2", "e3"]
#: Conditions the random workflows put on external triggers; fires carry
#: ``{"n": 0..3}``, and a fire without ``n`` makes the first two fail to
#: evaluate (which counts as false).
CONDITIONS = ["kwargs.n > 1", "kwargs.n % 2 == 0", "has(kwargs.n) && kwargs.n != 3"]

#: A fire: a trigger name, or a name and its kwargs.
Fire = str | tuple[str, dict[str, Any]]
#: Seconds of the random workflows' deadlines (task ti waits this plus i, so
#: no two instances' deadlines fall due at once): far beyond the minutes the
#: delayed fires use, they come due only when a test sweeps past them.
DEADLINE_SECONDS = 10**6


def _number(name: str) -> int:
    return int(name.rpartition("#")[2])


class Need:
    """An ``after``/``unless`` list: every plain name, and ``k`` of each group."""

    def __init__(self, entries: list[Any], extra: str | None = None) -> None:
        self.plain = {e for e in entries if isinstance(e, str)} | ({extra} if extra else set())
        self.groups = [
            (1, set(e["anyOf"])) if "anyOf" in e else (e["atLeast"], set(e["of"]))
            for e in entries
            if not isinstance(e, str)
        ]
        self.names = self.plain.union(*(of for _, of in self.groups))

    def met(self, got: set[str]) -> bool:
        return self.plain <= got and all(len(of & got) >= k for k, of in self.groups)

    def waits_for(self, trigger: str, got: set[str]) -> bool:
        if trigger in got:
            return False
        if trigger in self.plain:
            return True
        return any(trigger in of and len(of & got) < k for k, of in self.groups)


class Model:
    """Each fire applies to the tasks that mention the trigger (in name
    order) and whose condition on it holds; ready instances run first in,
    first out, and each finished one fires its task's name with ``{}``."""

    def __init__(self, configuration: dict[str, dict[str, Any]]) -> None:
        self.tasks: dict[str, tuple[Need, str | None, Need, dict[str, str]]] = {}
        for name, d in configuration.items():
            every = d.get("andEvery")
            after, unless = Need(d["after"], every), Need(d.get("unless", []))
            self.tasks[name] = (after, every, unless, d.get("if", {}))
        self.deadline_of = {
            n: d["deadline"]["fire"] for n, d in configuration.items() if "deadline" in d
        }
        self.latest: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.queue: deque[str] = deque()
        #: Pending delayed fires ``(due, trigger, kwargs)`` and the instances
        #: whose deadline is pending, in creation order.
        self.timers: list[tuple[float, str, dict[str, Any]]] = []
        self.deadlines: list[str] = []

    @staticmethod
    def _passes(conditions: dict[str, str], trigger: str, kwargs: dict[str, Any]) -> bool:
        return trigger not in conditions or evaluate(conditions[trigger], kwargs)[0]

    def _create(self, task: str) -> str:
        after, _, unless, conditions = self.tasks[task]
        seed = {t for t, kw in self.latest.items() if self._passes(conditions, t, kw)}
        name = f"{task}#{sum(1 for i in self.instances.values() if i['task'] == task)}"
        self.instances[name] = {
            "task": task,
            "got": after.names & seed,
            "unless_got": unless.names & seed,
            "status": "unstarted",
        }
        if task in self.deadline_of:
            self.deadlines.append(name)
        return name

    def _waits_for(self, name: str, trigger: str) -> bool:
        inst = self.instances[name]
        after, _, unless, _ = self.tasks[inst["task"]]
        return inst["status"] == "unstarted" and (
            after.waits_for(trigger, inst["got"]) or unless.waits_for(trigger, inst["unless_got"])
        )

    def _apply(self, trigger: str, kwargs: dict[str, Any]) -> None:
        ready = []
        for task in sorted(self.tasks):
            after, every, unless, conditions = self.tasks[task]
            if trigger not in after.names and trigger not in unless.names:
                continue
            if not self._passes(conditions, trigger, kwargs):
                continue
            mine = sorted((n for n, i in self.instances.items() if i["task"] == task), key=_number)
            if not mine:
                candidates = [self._create(task)]
            else:
                candidates = [n for n in mine if self._waits_for(n, trigger)]
                if not candidates and trigger == every:
                    candidates = [self._create(task)]
            for name in candidates:
                inst = self.instances[name]
                if trigger in after.names:
                    inst["got"].add(trigger)
                if trigger in unless.names:
                    inst["unless_got"].add(trigger)
                if unless.names and unless.met(inst["unless_got"]):
                    inst["status"] = "abandoned"
                elif after.met(inst["got"]):
                    ready.append(name)
        self.latest[trigger] = kwargs
        for name in ready:
            self.instances[name]["status"] = "scheduled"
            self.queue.append(name)

    def _drain(self) -> None:
        while self.queue:
            name = self.queue.popleft()
            self.instances[name]["status"] = "finished"
            self._apply(self.instances[name]["task"], {})

    def fire(self, trigger: str, kwargs: dict[str, Any] | None = None) -> None:
        self._apply(trigger, kwargs or {})
        self._drain()

    def later(self, due: float, trigger: str, kwargs: dict[str, Any] | None = None) -> None:
        """A delayed fire: nothing happens until a sweep at ``due`` or later."""
        self.timers.append((due, trigger, kwargs or {}))

    def sweep(self, now: float) -> int:
        """Apply the delayed fires due at ``now``, earliest first, each as a
        plain fire but with the tasks they schedule run only after the last
        one (a sweep applies them all, then the runner runs what they
        scheduled); how many it applied."""
        due = sorted((t for t in self.timers if t[0] <= now), key=lambda t: t[0])
        self.timers = [t for t in self.timers if t[0] > now]
        for _, trigger, kwargs in due:
            self._apply(trigger, kwargs)
        self._drain()
        return len(due)

    def sweep_deadlines(self, order: list[str]) -> int:
        """Apply the pending deadlines (instance names, in the order they
        fall due): an instance still unstarted fires its task's deadline
        trigger with ``{"instance": name}``, any other is dropped. Deadlines
        of instances this creates stay pending. How many fired."""
        assert sorted(order) == sorted(self.deadlines), "the same pending deadlines"
        self.deadlines = []
        fired = 0
        for name in order:
            if self.instances[name]["status"] == "unstarted":
                fired += 1
                self._apply(self.deadline_of[self.instances[name]["task"]], {"instance": name})
        self._drain()
        return fired

    def statuses(self) -> dict[str, str]:
        return {n: i["status"] for n, i in self.instances.items()}


def split(fire: Fire) -> tuple[str, dict[str, Any]]:
    return (fire, {}) if isinstance(fire, str) else fire


def model_statuses(configuration: dict[str, Any], fires: list[Any]) -> dict[str, str]:
    model = Model(configuration)
    for fire in fires:
        model.fire(*split(fire))
    return model.statuses()


def order_matters(configuration: dict[str, Any]) -> bool:
    """Whether the statuses may depend on the order of the same fires:
    ``unless`` is about order by definition, and a condition makes a new
    instance's seed depend on which kwargs came last."""
    return any("unless" in d or "if" in d for d in configuration.values())


# -- strategies --------------------------------------------------------------------


@st.composite
def _entries(draw: Any, pool: list[str], groups: bool) -> list[Any]:
    """An ``after``/``unless`` list: names, and (maybe) groups of other names."""
    names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
    if not groups or len(names) < 2 or draw(st.booleans()):
        return names
    cut = draw(st.integers(0, len(names) - 2))
    plain, members = names[:cut], names[cut:]
    found: list[Any] = [*plain, _group(draw, members)]
    if len(members) >= 3 and draw(st.booleans()):
        # A second group sharing a member with the first: a trigger that
        # completes one group must still reach the other.
        found.append(_group(draw, members[-2:] if draw(st.booleans()) else members[:2]))
    return found


def _group(draw: Any, members: list[str]) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"anyOf": members}
    return {"atLeast": draw(st.integers(1, len(members))), "of": members}


@st.composite
def workflows(
    draw: Any,
    with_unless: bool = True,
    with_groups: bool = True,
    with_conditions: bool = False,
    with_deadlines: bool = False,
) -> dict[str, dict[str, Any]]:
    """Tasks t0..tn; each waits on external triggers and/or the cascades of
    earlier tasks (maybe through groups), so every workflow is acyclic and
    valid; conditions go on external triggers the task mentions; a deadline
    fires an external trigger."""
    configuration: dict[str, dict[str, Any]] = {}
    for i in range(draw(st.integers(1, 5))):
        pool = EXTERNAL + [f"t{j}" for j in range(i)]
        after = draw(_entries(pool, with_groups))
        directives: dict[str, Any] = {"after": after, "run": DevNullTask.name}
        # andEvery is required on its own: never a group member too.
        members = {m for e in after if not isinstance(e, str) for m in Need([e]).names}
        every_pool = [p for p in pool if p not in members]
        if every_pool and draw(st.booleans()):
            directives["andEvery"] = draw(st.sampled_from(every_pool))
        if with_unless and draw(st.integers(0, 3)) == 0:
            directives["unless"] = draw(_entries(EXTERNAL, with_groups))
        if with_conditions:
            mentioned = sorted(
                Need(after, directives.get("andEvery")).names
                | Need(directives.get("unless", [])).names
            )
            external = [t for t in mentioned if t in EXTERNAL]
            chosen = draw(st.lists(st.sampled_from(external), unique=True)) if external else []
            if chosen:
                directives["if"] = {t: draw(st.sampled_from(CONDITIONS)) for t in chosen}
        if with_deadlines and draw(st.booleans()):
            fire = draw(st.sampled_from(EXTERNAL))
            directives["deadline"] = {"seconds": DEADLINE_SECONDS + i, "fire": fire}
        configuration[f"t{i}"] = directives
    return configuration


fire_sequences = st.lists(st.sampled_from(EXTERNAL), min_size=1, max_size=8)
#: Fires with kwargs ``{"n": 0..3}``, sometimes none.
kwarg_fires = st.lists(
    st.tuples(
        st.sampled_from(EXTERNAL),
        st.one_of(st.just({}), st.builds(lambda n: {"n": n}, st.integers(0, 3))),
    ),
    min_size=1,
    max_size=8,
)
