"""The second round of fire-path shortcuts give what the general code gives."""

from __future__ import annotations

import dataclasses
import gc
import random
import string

import pytest

from triggers import validation
from triggers.effects import Effects, Load
from triggers.exceptions import InvalidTriggerError, InvalidTriggerTypeError
from triggers.storages.data import FetchRequest
from triggers.validation import dump_json, normalise_kwargs

_CHARS = [chr(i) for i in range(130)] + ["é", "\u2028", "\ud800"]


def _text(rng: random.Random) -> str:
    pool = _CHARS if rng.random() < 0.3 else string.ascii_letters
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 6)))


def _value(rng: random.Random) -> object:
    return rng.choice(
        [
            _text(rng),
            rng.choice([0, -5, 7, 10**20, -(10**30)]),
            True,
            False,
            None,
            1.5,
            [1],
            {"a": 1},
            10**5000,  # more digits than int-to-text conversion allows
        ]
    )


def _kwargs(rng: random.Random) -> dict[object, object]:
    return {
        (_text(rng) if rng.random() < 0.95 else 3): _value(rng) for _ in range(rng.randint(0, 4))
    }


def _outcome(kwargs: object, max_bytes: int | None) -> tuple[object, ...]:
    try:
        return ("ok", normalise_kwargs("t", kwargs, max_bytes=max_bytes, max_depth=64))
    except (InvalidTriggerError, InvalidTriggerTypeError) as exc:
        return ("error", type(exc), str(exc))


def test_the_size_of_plain_kwargs_is_the_length_of_their_json() -> None:
    rng = random.Random(7)
    plain = 0
    for _ in range(5000):
        kwargs = _kwargs(rng)
        size = validation._plain_json_size(kwargs)
        if size is not None:
            plain += 1
            assert size == len(dump_json(kwargs, "kwargs"))
    assert plain > 1000


def test_plain_kwargs_normalise_as_the_general_path_does(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    cases = [_kwargs(rng) for _ in range(3000)]
    limits = (None, 5, 20, 1000)
    quick = [_outcome(kwargs, limit) for kwargs in cases for limit in limits]
    monkeypatch.setattr(validation, "_plain_json_size", lambda value: None)
    general = [_outcome(kwargs, limit) for kwargs in cases for limit in limits]
    assert quick == general


def test_plain_kwargs_come_back_as_a_private_copy() -> None:
    kwargs = {"n": 1, "text": "hello"}
    copied = normalise_kwargs("t", kwargs, max_bytes=100, max_depth=64)
    assert copied == kwargs and copied is not kwargs


def test_the_written_out_inits_keep_fields_defaults_and_immutability() -> None:
    assert [f.name for f in dataclasses.fields(Load)] == ["triggers", "instances", "everything"]
    assert Load() == Load((), (), False)
    assert dataclasses.replace(Load(("a",)), everything=True) == Load(("a",), (), True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Load().triggers = ("b",)  # type: ignore[misc]
    request = FetchRequest(("a",), kwargs=("k",), timers=True)
    assert dataclasses.astuple(request) == (("a",), (), (), False, ("k",), None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.timers = False  # type: ignore[misc]
    assert hash(request) == hash(FetchRequest(("a",), kwargs=("k",), timers=True))
    first, second = Effects(), Effects(when="now")
    first.created.append("x")  # type: ignore[arg-type]
    assert second.created == [] and second.when == "now"
    assert [f.name for f in dataclasses.fields(Effects)][-1] == "when"


def test_a_cache_that_goes_leaves_no_client_entry() -> None:
    from django.core.cache.backends.locmem import LocMemCache

    from triggers.storages import cache as cache_module

    cache = LocMemCache("perf2", {})
    assert cache_module._client_for(cache) is None
    assert id(cache) in cache_module._CLIENTS
    key = id(cache)
    del cache
    gc.collect()
    assert key not in cache_module._CLIENTS


def test_an_instance_asked_for_and_absent_is_not_asked_for_again(unique_uid: str) -> None:
    from triggers.exceptions import UnknownInstanceError
    from triggers.manager import TriggerManager
    from triggers.storages.cache import CacheStorageBackend

    manager = TriggerManager(CacheStorageBackend(unique_uid))
    manager.update_configuration({"t": {"after": ["go"], "run": "triggers.testing.DevNullTask"}})
    storage = manager.storage
    fetches: list[FetchRequest] = []
    fetch = storage.fetch

    def counting(request: FetchRequest) -> object:
        fetches.append(request)
        return fetch(request)

    storage.fetch = counting  # type: ignore[method-assign]
    with storage.transaction() as txn:
        with pytest.raises(UnknownInstanceError):
            txn.get_instance("t#7")
        txn.fetch(instances=["t#7"])
    # The second ask knows the first found nothing.
    assert [r.instances for r in fetches] == [("t#7",)]
