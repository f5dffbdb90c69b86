"""SeedLock: validation, immutability, canonical form."""

from __future__ import annotations

import math
import pickle

import pytest

from langchain_seedlock import InvalidLockError, SeedLock, SeedLockError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seed": True}, "seed"),
        ({"seed": 1.0}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"seed": None}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"seed": 1, "temperature": 2.5}, "temperature"),
        ({"seed": 1, "temperature": -0.1}, "temperature"),
        ({"seed": 1, "temperature": math.nan}, "temperature"),
        ({"seed": 1, "temperature": "0.7"}, "temperature"),
        ({"seed": 1, "top_p": 1.5}, "top_p"),
        ({"seed": 1, "max_tokens": 0}, "max_tokens"),
        ({"seed": 1, "max_tokens": 1.5}, "max_tokens"),
        ({"seed": 1, "max_completion_tokens": -3}, "max_tokens"),
        ({"seed": 1, "n": 0}, "n"),
        ({"seed": 1, "presence_penalty": 3}, "presence_penalty"),
        ({"seed": 1, "frequency_penalty": math.inf}, "frequency_penalty"),
        ({"seed": 1, "stop": 3}, "stop"),
        ({"seed": 1, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": 1, "logit_bias": {"50256": 101}}, "logit_bias['50256']"),
        ({"seed": 1, "logprobs": 1}, "logprobs"),
        ({"seed": 1, "top_logprobs": 21}, "top_logprobs"),
        ({"seed": 1, "response_format": "json"}, "response_format"),
        ({"seed": 1, "temprature": 0.5}, "temprature"),
        ({"seed": 1, "on_violation": "explode"}, "on_violation"),
        ({"seed": 1, "max_tokens": 5, "max_completion_tokens": 5}, "max_completion_tokens"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidLockError) as info:
        SeedLock(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert repr(field) in str(info.value)
    assert isinstance(info.value, SeedLockError)
    assert isinstance(info.value, ValueError)


def test_extremes_of_the_seed_range_are_accepted() -> None:
    assert SeedLock(seed=2**63 - 1).seed == 2**63 - 1
    assert SeedLock(seed=-(2**63)).seed == -(2**63)


def test_immutable_and_hashable() -> None:
    lock = SeedLock(seed=1, temperature=0.5)
    with pytest.raises(AttributeError):
        lock.seed = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        lock.params["temperature"] = 1.0  # type: ignore[index]
    assert {lock: 1}[SeedLock(seed=1, temperature=0.5)] == 1


def test_alias_and_canonical_form() -> None:
    lock = SeedLock(seed=5, max_completion_tokens=64, stop="END", temperature=1)
    assert lock.canonical() == {"seed": 5, "max_tokens": 64, "stop": ["END"], "temperature": 1.0}
    assert list(lock.params) == sorted(lock.params)


def test_lock_hash_is_stable_and_sensitive() -> None:
    a = SeedLock(seed=5, temperature=0.7, max_tokens=10)
    b = SeedLock(max_tokens=10, temperature=0.7, seed=5)
    assert a.lock_hash == b.lock_hash
    # Pinned: the hash must not change across releases or processes.
    assert a.lock_hash == "95c133e52a9c5848be8efd8a4cdce9bc21aafa71e9551891450289b2a8e311c4"
    assert a.lock_hash == SeedLock.from_dict(a.to_dict()).lock_hash
    assert a.lock_hash != SeedLock(seed=6, temperature=0.7, max_tokens=10).lock_hash
    assert a.lock_hash != a.replace(temperature=0.8).lock_hash
    # on_violation decides what happens, not what is asked: same hash.
    assert a.lock_hash == a.replace(on_violation="warn").lock_hash


def test_round_trips() -> None:
    lock = SeedLock(
        seed=9, logit_bias={1: -100}, response_format={"type": "json_object"}, on_violation="warn"
    )
    assert SeedLock.from_dict(lock.to_dict()) == lock
    assert pickle.loads(pickle.dumps(lock)) == lock
    assert "SeedLock(seed=9" in repr(lock)


def test_replace_can_remove_a_parameter() -> None:
    lock = SeedLock(seed=1, temperature=0.2).replace(temperature=None)
    assert "temperature" not in lock.params


def test_equals_locked_treats_numbers_and_aliases_alike() -> None:
    lock = SeedLock(seed=1, temperature=1, max_tokens=20, stop=["x"])
    assert lock.equals_locked("temperature", 1.0)
    assert lock.equals_locked("max_completion_tokens", 20)
    assert lock.equals_locked("stop", "x")
    assert not lock.equals_locked("temperature", 0.99)
    assert not lock.equals_locked("seed", 2)
