"""Checking a request's parameters against a lock, and the violation policy.

Written once, used by the locked models (on the final payload), the callback
handler (on invocation params) and the agent middleware (on model settings).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from openai import NotGiven, Omit

from langchain_seedlock import _events
from langchain_seedlock._body import PARAM_CONTAINERS, QUERY_KEY, effective_params, is_omitted
from langchain_seedlock._errors import LockViolationError, ParamDroppedError
from langchain_seedlock._lock import LOCKABLE_PARAMS, SeedLock, _plain

ViolationKind = Literal["override", "missing"]

# Every name integrations send a locked parameter under (canonical name first):
# a request may carry several (``max_tokens`` and ``max_completion_tokens``),
# and each one sent must hold the locked value. ``random_seed``: Mistral;
# ``num_predict``: Ollama; ``max_output_tokens``: Gemini (``maxOutputTokens``,
# ``topP``, ``stopSequences``: its generation_config takes the JSON names too);
# ``stop_sequences``: Anthropic. Parameters not listed have one name.
SPELLINGS: Final[Mapping[str, tuple[str, ...]]] = {
    "seed": ("seed", "random_seed"),
    "top_p": ("top_p", "topP"),
    "max_tokens": (
        "max_tokens",
        "max_completion_tokens",
        "num_predict",
        "max_output_tokens",
        "maxOutputTokens",
    ),
    "stop": ("stop", "stop_sequences", "stopSequences"),
}
# SPELLINGS for every lockable parameter, one lookup in the per-call loops.
_NAMES: Final = {name: SPELLINGS.get(name, (name,)) for name in ("seed", *LOCKABLE_PARAMS)}
_OMITTED_TYPES: Final = frozenset({Omit, NotGiven})  # `is_omitted`, by exact type (hot loop)
_NOTHING: Final = object()  # "no override found" (None is a value a call may send)


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

    ``params`` is read as the server receives it (`effective_params`): the
    entries of ``extra_body``, ``model_kwargs`` and ``options`` count as
    parameters, over the top level; every spelling present is checked
    (``max_tokens`` and ``max_completion_tokens``); a locked name in
    ``extra_query`` is checked too. A value the openai SDK leaves out
    (``openai.omit``) is an override; ``None`` is one only with
    ``require_all`` (on a final payload it is a JSON ``null``; as a call
    argument it means "not given").

    With ``require_all``, a locked parameter absent from ``params`` counts too
    (kind ``"missing"``): used on a final payload, where absent means not sent.
    """
    found: list[Violation] = []
    if not params and not require_all:
        return found  # no call-time arguments: the common case
    body = effective_params(params, keep_omitted=True)
    query = params.get(QUERY_KEY)
    if query is not None and not isinstance(query, Mapping):
        query = None
    # canonical_items: built once per lock (this runs on every call).
    for name, locked in lock.canonical_items.items():
        attempted: Any = _NOTHING
        present = False
        for key in _NAMES[name]:
            if key not in body:
                continue
            value = body[key]
            if value is None or type(value) in _OMITTED_TYPES:
                if require_all or value is not None:
                    present = True
                    if attempted is _NOTHING:
                        attempted = None
                continue
            present = True
            if attempted is _NOTHING and not lock.equals_locked(name, value):
                attempted = value
        if query is not None and attempted is _NOTHING:
            attempted = _query_override(lock, name, query)
        if attempted is not _NOTHING:
            found.append(Violation(name, _plain(locked), attempted, "override"))
        elif require_all and not present:
            found.append(Violation(name, _plain(locked), None, "missing"))
    return found


def find_overrides(lock: SeedLock, given: Mapping[str, Any]) -> list[Violation]:
    """Call-time or bind-time values that differ from the lock, ``None``
    included (it is sent as a JSON ``null``, or in place of the model's own
    value); a parameter not given is not missing."""
    if not given:
        return []
    return [v for v in find_violations(lock, given, require_all=True) if v.kind == "override"]


def locked_request(lock: SeedLock, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every locked parameter it carries set to the locked value.

    Every place a parameter reaches the wire is rewritten: the top level,
    each mapping of `PARAM_CONTAINERS` (``extra_body`` included: the openai
    SDK would let it override the top level) and ``extra_query``, in every
    spelling present; an equal value of another type (``seed=5.0`` for a
    locked 5) becomes the locked one. Nothing absent is added. Mappings that
    change are copied, never mutated (they may be the caller's).
    """
    out = dict(params)
    _set_locked(lock, out)
    for key in _NESTED_KEYS:
        inner = out.get(key)
        if inner is not None and isinstance(inner, Mapping):
            copy = dict(inner)
            if _set_locked(lock, copy):
                out[key] = copy
    return out


_NESTED_KEYS: Final = (*PARAM_CONTAINERS, QUERY_KEY)
_SCALARS: Final = frozenset({int, float, str, bool})


def _set_locked(lock: SeedLock, target: dict[str, Any]) -> bool:
    """Write the locked values over the spellings present in ``target``;
    whether anything changed."""
    changed = False
    for name, locked in lock.canonical_items.items():
        for key in _NAMES[name]:
            if key not in target:
                continue
            current = target[key]
            kind = type(current)
            if kind is type(locked) and kind in _SCALARS and current == locked:
                continue  # the common case: already the locked value
            plain = _plain(locked)
            if kind is type(plain) and current == plain:
                continue
            target[key] = plain
            changed = True
    return changed


def _query_override(lock: SeedLock, name: str, query: Mapping[str, Any]) -> Any:
    """The value a query parameter sets for ``name`` when it is not the locked
    one (query values are text: ``"5"`` is the locked 5), else `_NOTHING`."""
    for key in _NAMES[name]:
        if key not in query:
            continue
        value = query[key]
        if is_omitted(value):
            continue  # left out of the URL: not sent
        parsed = value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                parsed = json.loads(value)
        if parsed is None or not lock.equals_locked(name, parsed):
            return value
    return _NOTHING


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
