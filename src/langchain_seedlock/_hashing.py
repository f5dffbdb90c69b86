"""Canonical JSON and the request / output / backend hashes.

The hashes are sha256 over canonical JSON: keys sorted, no whitespace, UTF-8,
integral floats written as integers (``1.0`` and ``1`` hash alike), tuples as
lists. They never depend on Python's ``hash()``, the process or the dict order,
so a baseline recorded by one worker is comparable in any other.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_openai_messages

# Keys of a request payload that change how it travels, not what it asks for.
# A streamed and an invoked call of the same request must hash alike.
TRANSPORT_KEYS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "extra_headers",
        "extra_query",
        "timeout",
        "service_tier",
    }
)
# Names different integrations use for the same thing, mapped to one spelling.
PARAM_ALIASES = {"max_completion_tokens": "max_tokens", "random_seed": "seed"}


# Exact types returned as they are; plain dicts and lists are walked inline
# (a large request is thousands of these: no call or ABC check per leaf).
_LEAVES = frozenset({str, int, bool, type(None)})


def _normalize(value: Any) -> Any:
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is dict:
        return {
            (k if type(k) is str else str(k)): (v if type(v) in _LEAVES else _normalize(v))
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [v if type(v) in _LEAVES else _normalize(v) for v in value]
    return _normalize_other(value)


def _normalize_other(value: Any) -> Any:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return int(value) if value.is_integer() and abs(value) < 2**63 else _Float(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_normalize(v) for v in value), key=canonical_json)
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, enum.Enum):
        return _normalize(value.value)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        # A pydantic class given as response_format: its schema is what is asked.
        return {"$schema_of": value.__name__, "schema": _normalize(value.model_json_schema())}
    if hasattr(value, "model_dump"):
        return _normalize(value.model_dump(mode="json"))
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

_orjson: Any
try:  # ~15x faster on large requests; installed with langsmith on CPython
    import orjson as _orjson

    _SORT_KEYS = _orjson.OPT_SORT_KEYS
except ImportError:  # pragma: no cover - the stdlib encoder gives the same text
    _orjson = None


class _Float(float):
    """A non-integral float, written as Python's ``repr`` (what ``json`` writes):
    orjson's own float format differs (``1e-7`` vs ``1e-07``)."""

    __slots__ = ()


def _orjson_default(value: Any) -> Any:
    if isinstance(value, _Float):
        return _orjson.Fragment(float.__repr__(value))
    raise TypeError(type(value).__name__)  # pragma: no cover - _normalize leaves none


def _encode_normalized(normalized: Any) -> bytes | str:
    """Canonical JSON of `_normalize` output: UTF-8 bytes (orjson) or text (stdlib)."""
    if _orjson is not None:
        # Byte-identical to the stdlib text below for everything `_normalize`
        # returns (strings escape alike, UTF-8 byte order is code point order);
        # what orjson refuses (ints beyond 64 bits, lone surrogates) falls through.
        try:
            encoded: bytes = _orjson.dumps(normalized, default=_orjson_default, option=_SORT_KEYS)
            return encoded
        except TypeError:
            pass
    return _ENCODER.encode(normalized)


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (see the module docstring)."""
    text = _encode_normalized(_normalize(value))
    return text.decode("utf-8") if isinstance(text, bytes) else text


def sha256_hex(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``, as 64 hex characters."""
    return _sha256_normalized(_normalize(value))


def _sha256_normalized(normalized: Any) -> str:
    text = _encode_normalized(normalized)
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode("utf-8")).hexdigest()


def normalize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map parameter aliases to one spelling and ``stop="x"`` to ``["x"]``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = PARAM_ALIASES.get(key, key)
        out[name] = [value] if name == "stop" and isinstance(value, str) else value
    return out


def request_hash(provider: str, payload: Mapping[str, Any]) -> str:
    """Hash of what a request asks for: provider, model, messages, tools and params.

    ``payload`` is the final request body (OpenAI wire format for the OpenAI
    models) or the equivalent built by `request_hash_from_messages`.
    """
    body = {k: v for k, v in normalize_params(payload).items() if k not in TRANSPORT_KEYS}
    body["provider"] = provider
    normalized = _normalize(body)  # a fresh copy: renamed in place below
    messages = body.get("messages")
    if isinstance(messages, list):
        _positional_ids_in_place(messages, normalized["messages"])
    return _sha256_normalized(normalized)


def _positional_ids_in_place(messages: list[Any], normalized: list[Any]) -> None:
    """`_positional_tool_call_ids` on the normalized copy of ``messages``, in
    place (one walk of a large request instead of a copy, then a walk)."""
    ids: dict[str, str] = {}

    def rename(value: str) -> str:
        new = ids.get(value)
        if new is None:
            new = ids[value] = f"call_{len(ids)}"
        return new

    for original, message in zip(messages, normalized, strict=True):
        if not isinstance(original, Mapping) or (
            "tool_calls" not in original and "tool_call_id" not in original
        ):
            continue
        calls = original.get("tool_calls")
        if isinstance(calls, list):
            for call, copy in zip(calls, message["tool_calls"], strict=True):
                if not isinstance(call, Mapping):
                    continue
                call_id = call.get("id")
                if isinstance(call_id, str):
                    copy["id"] = rename(call_id)
                elif "id" not in copy:
                    copy["id"] = None
        if "tool_call_id" in original and isinstance(original["tool_call_id"], str):
            message["tool_call_id"] = rename(original["tool_call_id"])


def _positional_tool_call_ids(messages: list[Any]) -> list[Any]:
    """Replace tool call ids by their position (``call_0``, ``call_1``...).

    Providers make the ids random, so without this every agent step after a
    tool call would be a new request and could never be compared.
    """
    ids: dict[str, str] = {}

    def rename(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return ids.setdefault(value, f"call_{len(ids)}")

    out: list[Any] = []
    for original in messages:
        if not isinstance(original, Mapping) or (
            "tool_calls" not in original and "tool_call_id" not in original
        ):
            out.append(original)  # nothing to rename: no copy
            continue
        message = dict(original)
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [
                {**call, "id": rename(call.get("id"))} if isinstance(call, Mapping) else call
                for call in message["tool_calls"]
            ]
        if "tool_call_id" in message:
            message["tool_call_id"] = rename(message["tool_call_id"])
        out.append(message)
    return out


def messages_to_wire(messages: Iterable[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI-format dicts for messages, for hashing requests we do not send."""
    return list(convert_to_openai_messages(list(messages)))


def request_hash_from_messages(
    provider: str, messages: Sequence[BaseMessage], params: Mapping[str, Any]
) -> str:
    """Request hash from LangChain messages and invocation params (handler, middleware)."""
    payload = {k: v for k, v in params.items() if k not in _INVOCATION_ONLY_KEYS}
    payload["messages"] = messages_to_wire(messages)
    return request_hash(provider, payload)


# Keys LangChain adds to invocation params that are not part of the request.
_INVOCATION_ONLY_KEYS = frozenset({"_type", "ls_structured_output_format", "stream", "api_key"})


def message_output(message: BaseMessage) -> dict[str, Any]:
    """The part of a generated message that the output hash covers."""
    tool_calls = [
        {"name": call.get("name"), "args": call.get("args")}
        for call in getattr(message, "tool_calls", None) or []
    ]
    return {"text": message.text, "tool_calls": tool_calls}


def output_hash(messages: Sequence[BaseMessage]) -> str:
    """Hash of generated text and tool calls (ids excluded: they are random).

    One message hashes as itself; ``n > 1`` generations hash as the list.
    """
    if len(messages) == 1:
        return sha256_hex(message_output(messages[0]))
    return sha256_hex([message_output(m) for m in messages])


@functools.lru_cache(maxsize=256)  # a handful of backends, one per call: hash each once
def backend_id(
    system_fingerprint: str | None,
    response_model: str | None,
    service_tier: str | None = None,
) -> str:
    """Short hash of what the response says about the backend that served it."""
    return sha256_hex(
        {
            "system_fingerprint": system_fingerprint,
            "model": response_model,
            "service_tier": service_tier,
        }
    )[:16]
