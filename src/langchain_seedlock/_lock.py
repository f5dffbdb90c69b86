"""`SeedLock`: the seed and sampling parameters every call must be sent with."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from langchain_seedlock._errors import InvalidArgumentError, InvalidLockError
from langchain_seedlock._hashing import PARAM_ALIASES, canonical_json, normalize_params, sha256_hex
from langchain_seedlock._identity import Fields, check_declared

OnViolation = Literal["raise", "warn", "ignore"]
ON_VIOLATION_CHOICES: tuple[OnViolation, ...] = ("raise", "warn", "ignore")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Every parameter a lock may hold, in wire spelling. `max_completion_tokens`
# is accepted as an alias of `max_tokens`.
LOCKABLE_PARAMS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "n",
    "logit_bias",
    "response_format",
    "logprobs",
    "top_logprobs",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_range(name: str, value: Any, low: float, high: float) -> float:
    if not _is_number(value):
        raise InvalidLockError(name, value, "must be a number")
    if math.isnan(value) or not low <= value <= high:
        raise InvalidLockError(name, value, f"must be between {low:g} and {high:g}")
    return float(value)


def _check_positive_int(name: str, value: Any, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidLockError(name, value, "must be an integer")
    if not 1 <= value <= high:
        raise InvalidLockError(name, value, f"must be between 1 and {high}")
    return value


def _validate_param(name: str, value: Any) -> Any:
    if name == "temperature":
        return _check_range(name, value, 0.0, 2.0)
    if name == "top_p":
        return _check_range(name, value, 0.0, 1.0)
    if name in ("presence_penalty", "frequency_penalty"):
        return _check_range(name, value, -2.0, 2.0)
    if name == "max_tokens":
        return _check_positive_int(name, value)
    if name == "n":
        return _check_positive_int(name, value, 128)
    if name == "top_logprobs":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 20:
            raise InvalidLockError(name, value, "must be an integer between 0 and 20")
        return value
    if name == "logprobs":
        if not isinstance(value, bool):
            raise InvalidLockError(name, value, "must be True or False")
        return value
    if name == "stop":
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
            raise InvalidLockError(name, value, "must be a string or a list of strings")
        if not all(stops):
            raise InvalidLockError(name, value, "must not hold an empty stop sequence")
        if not 1 <= len(stops) <= 4:
            raise InvalidLockError(name, value, "must hold 1 to 4 stop sequences")
        return tuple(stops)
    if name == "logit_bias":
        if not isinstance(value, Mapping):
            raise InvalidLockError(name, value, "must be a mapping of token id to bias")
        bias: dict[str, float] = {}
        for token, weight in value.items():
            if isinstance(token, bool) or not (
                isinstance(token, int) or (isinstance(token, str) and token.isdecimal())
            ):
                raise InvalidLockError(
                    name, value, f"keys must be token ids (integers), got {token!r}"
                )
            _check_range(f"logit_bias[{token!r}]", weight, -100.0, 100.0)
            bias[str(token)] = float(weight)
        return MappingProxyType(bias)
    if name == "response_format":
        if not isinstance(value, Mapping) or "type" not in value:
            raise InvalidLockError(
                name, value, "must be a mapping with a 'type' key, e.g. {'type': 'json_object'}"
            )
        if not isinstance(value["type"], str):
            raise InvalidLockError(name, value, "its 'type' must be a string")
        try:
            # Sent as JSON and hashed: plain JSON only (no NaN, no objects whose
            # str() would put a memory address into the lock hash).
            json.dumps(_plain(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidLockError(name, value, f"must be plain JSON ({exc})") from None
        return MappingProxyType(dict(value))
    raise AssertionError(name)  # pragma: no cover - guarded by LOCKABLE_PARAMS


def validate_seed(seed: Any) -> int:
    """Return ``seed`` if it is an int in the signed 64-bit range, else raise."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidLockError("seed", seed, "must be an integer (not bool, float, str or None)")
    if not INT64_MIN <= seed <= INT64_MAX:
        raise InvalidLockError("seed", seed, "must fit in a signed 64-bit integer")
    return seed


class SeedLock:
    """The seed and sampling parameters that every model call must be sent with.

    Immutable and hashable. ``on_violation`` decides what happens when a call
    tries to send another value: ``"raise"`` (`LockViolationError`, nothing is
    sent), ``"warn"`` (a ``seedlock.lock_violation`` event, the locked value is
    sent) or ``"ignore"`` (the locked value is sent silently).

    Example:
        ```python
        lock = SeedLock(seed=123, temperature=0.7, max_tokens=200)
        lock.params  # {'max_tokens': 200, 'temperature': 0.7}
        lock.lock_hash  # stable across processes
        ```
    """

    __slots__ = ("_canonical", "_hash", "_params", "backend", "on_violation", "seed")

    seed: int
    on_violation: OnViolation
    backend: Fields
    """Backend settings no server exposes, declared by the user (flash
    attention, KV-cache type, GPU, a batch-invariant mode): part of the
    backend identity of every call made with this lock, not of the lock hash."""
    _params: Mapping[str, Any]
    _hash: str
    _canonical: Mapping[str, Any]  # seed + params, built once: checked on every call

    def __init__(
        self,
        seed: int,
        *,
        on_violation: OnViolation = "raise",
        backend: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> None:
        checked: dict[str, Any] = {}
        for raw_name, value in params.items():
            name = PARAM_ALIASES.get(raw_name, raw_name)  # max_completion_tokens: max_tokens
            if name not in LOCKABLE_PARAMS:
                raise InvalidLockError(
                    raw_name, value, f"is not a lockable parameter; use one of {LOCKABLE_PARAMS}"
                )
            if name in checked:
                raise InvalidLockError(raw_name, value, "is given twice (alias of max_tokens)")
            if value is not None:
                checked[name] = _validate_param(name, value)
        if on_violation not in ON_VIOLATION_CHOICES:
            raise InvalidLockError(
                "on_violation", on_violation, f"must be one of {ON_VIOLATION_CHOICES}"
            )
        object.__setattr__(self, "seed", validate_seed(seed))
        object.__setattr__(self, "on_violation", on_violation)
        object.__setattr__(self, "backend", check_declared("SeedLock", "backend", backend))
        object.__setattr__(self, "_params", MappingProxyType(dict(sorted(checked.items()))))
        # Immutable values (tuples, read-only mappings): safe to share.
        canonical = MappingProxyType({"seed": self.seed, **self._params})
        object.__setattr__(self, "_canonical", canonical)
        object.__setattr__(self, "_hash", sha256_hex(self.canonical()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SeedLock is immutable; use lock.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("SeedLock is immutable")

    @property
    def params(self) -> Mapping[str, Any]:
        """Locked sampling parameters (seed excluded), read-only, sorted by name."""
        return self._params

    @property
    def lock_hash(self) -> str:
        """sha256 of the canonical dict; the same in every process and version."""
        return self._hash

    def canonical(self) -> dict[str, Any]:
        """Seed and parameters as plain JSON-able values (``on_violation`` excluded:
        it decides what happens to a call, not what the call asks for)."""
        # A fresh copy every time: callers may change it.
        return {name: _plain(value) for name, value in self._canonical.items()}

    @property
    def canonical_items(self) -> Mapping[str, Any]:
        """Seed and parameters, read-only, built once (for the per-call checks).

        Values are immutable (``stop`` a tuple, mappings read-only); use
        `canonical` for plain JSON-able values."""
        return self._canonical

    def wire_params(self) -> dict[str, Any]:
        """Seed and parameters as they go into a request body."""
        return self.canonical()

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the lock with ``SeedLock.from_dict``."""
        out = {**self.canonical(), "on_violation": self.on_violation}
        if self.backend:
            out["backend"] = dict(self.backend)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeedLock:
        """Rebuild a lock from ``to_dict()`` output (or any mapping of fields)."""
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(
                "SeedLock.from_dict", "data", data,
                f"must be a mapping of lock fields, got {type(data).__name__}",
            )  # fmt: skip
        fields = dict(data)
        if "seed" not in fields:
            raise InvalidLockError("seed", None, "is required")
        return cls(**fields)

    def replace(self, **changes: Any) -> SeedLock:
        """A new lock with some fields changed (``None`` removes a parameter)."""
        return SeedLock.from_dict({**self.to_dict(), **changes})

    def equals_locked(self, name: str, value: Any) -> bool:
        """Whether ``value`` is the locked value of ``name`` (1 and 1.0 are equal)."""
        name = PARAM_ALIASES.get(name, name)
        locked = self.seed if name == "seed" else self._params.get(name)
        # Fast path (every call): the same type and value canonicalize alike.
        kind = type(value)
        if kind is type(locked) and kind in _SCALARS and value == locked:
            return True
        return canonical_json(normalize_params({name: _plain(value)})) == canonical_json(
            {name: _plain(locked)}
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeedLock):
            return NotImplemented
        return (
            self._hash == other._hash
            and self.on_violation == other.on_violation
            and self.backend == other.backend
        )

    def __hash__(self) -> int:
        return hash((self._hash, self.on_violation, self.backend))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.canonical().items())
        backend = f", backend={dict(self.backend)!r}" if self.backend else ""
        return f"SeedLock({fields}, on_violation={self.on_violation!r}{backend})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.to_dict(),))


def _rebuild(data: dict[str, Any]) -> SeedLock:
    return SeedLock.from_dict(data)


# Types whose equal values (same type) always have the same canonical JSON.
_SCALARS = frozenset({int, float, str})


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
