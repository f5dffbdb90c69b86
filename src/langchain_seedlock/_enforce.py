"""Checking a request's parameters against a lock, and the violation policy.

Written once, used by the locked models (on the final payload), the callback
handler (on invocation params) and the agent middleware (on model settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from langchain_seedlock import _events
from langchain_seedlock._errors import LockViolationError, ParamDroppedError
from langchain_seedlock._hashing import param_value
from langchain_seedlock._lock import SeedLock, _plain

ViolationKind = Literal["override", "missing"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One parameter whose value differs from the lock (or is absent)."""

    field: str
    locked: Any
    attempted: Any
    kind: ViolationKind


def find_violations(
    lock: SeedLock, params: Mapping[str, Any], *, require_all: bool = False
) -> list[Violation]:
    """Locked parameters that ``params`` sets to another value.

    With ``require_all``, a locked parameter absent from ``params`` counts too
    (kind ``"missing"``): used on a final payload, where absent means not sent.
    """
    found: list[Violation] = []
    if not params and not require_all:
        return found  # no call-time arguments: the common case
    # canonical_items: built once per lock (this runs on every call).
    for name, locked in lock.canonical_items.items():
        value = param_value(params, name)
        if value is None:
            if require_all:
                found.append(Violation(name, _plain(locked), None, "missing"))
            continue
        if not lock.equals_locked(name, value):
            found.append(Violation(name, _plain(locked), value, "override"))
    return found


def apply_policy(
    lock: SeedLock,
    violations: list[Violation],
    *,
    source: str,
    log_fields: Mapping[str, Any] | None = None,
) -> None:
    """Raise, warn or stay silent about overrides, per ``lock.on_violation``.

    Under ``"raise"`` the first violation raises `LockViolationError`; the
    caller has not sent anything yet. Otherwise the caller sends the locked
    values; ``"warn"`` logs one ``seedlock.lock_violation`` event per field.
    """
    if not violations:
        return
    if lock.on_violation == "raise":
        v = violations[0]
        raise LockViolationError(v.field, v.locked, v.attempted, source)
    if lock.on_violation == "warn":
        for v in violations:
            _events.emit(
                "apply_policy",
                "warning",
                _events.LOCK_VIOLATION,
                field=v.field,
                locked=v.locked,
                attempted=v.attempted,
                source=source,
                action="sent_locked_value",
                **{_events.K_LOCK_HASH: lock.lock_hash, **(log_fields or {})},
            )


def report_dropped(
    lock: SeedLock,
    dropped: list[Violation],
    *,
    model: str | None,
    log_fields: Mapping[str, Any] | None = None,
) -> None:
    """A locked parameter the integration removed before sending: an error under
    ``"raise"``, a ``seedlock.param_dropped`` event otherwise."""
    if not dropped:
        return
    if lock.on_violation == "raise":
        v = dropped[0]
        raise ParamDroppedError(v.field, v.locked, model)
    for v in dropped:
        _events.emit(
            "report_dropped",
            "warning",
            _events.PARAM_DROPPED,
            field=v.field,
            locked=v.locked,
            **{
                **(log_fields or {}),
                _events.K_REQUEST_MODEL: model,
                _events.K_LOCK_HASH: lock.lock_hash,
            },
        )
