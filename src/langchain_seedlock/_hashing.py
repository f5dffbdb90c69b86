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
import importlib
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from langchain_seedlock._body import effective_params
from langchain_seedlock._wire import messages_to_wire

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
    if isinstance(value, _Canonical):
        return _normalize(json.loads(value))  # a memoized value, for the stdlib encoder
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


class _Canonical(bytes):
    """Canonical JSON of a value, embedded as it is (see `_canonical_memo`)."""

    __slots__ = ()


def _orjson_default(value: Any) -> Any:
    if isinstance(value, _Float):
        return _orjson.Fragment(float.__repr__(value))
    if isinstance(value, _Canonical):
        return _orjson.Fragment(bytes(value))
    raise TypeError(type(value).__name__)  # pragma: no cover - _normalize leaves none


def _encode_normalized(normalized: Any) -> bytes:
    """Canonical JSON (UTF-8) of `_normalize` output.

    Also takes a structure that is canonical except for dicts whose keys may
    not be strings (`request_hash` passes plain messages through unwalked):
    orjson refuses those, and the walk below makes them canonical.
    """
    if _orjson is not None:
        # Byte-identical to the stdlib text below for everything `_normalize`
        # returns (strings escape alike, UTF-8 byte order is code point order);
        # what orjson refuses (ints beyond 64 bits, lone surrogates, non-string
        # keys) falls through.
        try:
            encoded: bytes = _orjson.dumps(normalized, default=_orjson_default, option=_SORT_KEYS)
            return encoded
        except TypeError:
            pass
    # Lone surrogates (invalid Unicode a str can still hold) kept, not refused.
    return _ENCODER.encode(_normalize(normalized)).encode("utf-8", "surrogatepass")


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (see the module docstring)."""
    return _encode_normalized(_normalize(value)).decode("utf-8", "surrogatepass")


def sha256_hex(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``, as 64 hex characters."""
    return _sha256_normalized(_normalize(value))


def _sha256_normalized(normalized: Any) -> str:
    return _sha256_bytes(_encode_normalized(normalized))


def _sha256_bytes(data: bytes) -> str:
    return (_small_sha256 if len(data) < _SMALL_INPUT else hashlib.sha256)(data).hexdigest()


def _builtin_sha256() -> Callable[[bytes], Any]:
    """CPython's own sha256 (``_sha2`` from 3.12, ``_sha256`` before), else OpenSSL's.

    Measured inside a model call (bench/overhead.py), OpenSSL's sha256 costs
    ~25 us for a few hundred bytes: its code is cold again by the time each
    call hashes, while CPython's costs ~7 us. OpenSSL's is the faster one on
    large inputs (SHA extensions: a 100k-token request in 0.3 ms), so it
    takes those. Both give the same digest.
    """
    for name in ("_sha2", "_sha256"):
        try:
            sha256: Callable[[bytes], Any] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return sha256
    return hashlib.sha256  # pragma: no cover - CPython builds ship one of them


_small_sha256 = _builtin_sha256()
_SMALL_INPUT = 2048  # bytes; above, OpenSSL's speed (5x) wins over its cold start


def normalize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map parameter aliases to one spelling and ``stop="x"`` to ``["x"]``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = PARAM_ALIASES.get(key, key)
        out[name] = [value] if name == "stop" and isinstance(value, str) else value
    return out


# Canonical name -> its other spelling (the inverse of PARAM_ALIASES).
_OTHER_SPELLING = {name: alias for alias, name in PARAM_ALIASES.items()}


def param_value(params: Mapping[str, Any], name: str) -> Any:
    """``normalize_params(params).get(name)``, without building the whole dict
    (the per-call checks read a handful of parameters)."""
    other = _OTHER_SPELLING.get(name)
    if other is not None and other in params:
        if name in params:  # both spellings: the later one wins, as in normalize_params
            return normalize_params(params).get(name)
        value = params[other]
    else:
        value = params.get(name)
    return [value] if name == "stop" and isinstance(value, str) else value


def request_hash(provider: str, payload: Mapping[str, Any]) -> str:
    """Hash of what a request asks for: provider, model, messages, tools and params.

    ``payload`` is the final request body (OpenAI wire format for the OpenAI
    models) or the equivalent built by `request_hash_from_messages`, read as
    the server receives it (`effective_params`: ``extra_body`` merged over it).
    """
    body: dict[str, Any] = {}
    for key, value in effective_params(payload).items():
        if key in TRANSPORT_KEYS:
            continue
        name = PARAM_ALIASES.get(key, key) if type(key) is str else str(key)
        if name == "messages" and type(value) is list:
            body[name] = _canonical_messages(value)
        elif name == "stop" and isinstance(value, str):
            body[name] = [value]
        elif type(value) in _LEAVES:
            body[name] = value
        else:
            body[name] = _canonical_memo(value)
    body["provider"] = provider
    return _sha256_normalized(body)


# Raw orjson text -> canonical JSON, for the large values a request repeats
# call after call (tool schemas, response formats): one C-speed encode and a
# dict lookup instead of a walk. Bounded; evicted oldest first. Shared by
# every thread: lookups are single dict operations (atomic), every change
# (insert and eviction) holds _MEMO_LOCK, so two threads never evict the same
# key or iterate the dict while another one inserts.
_MEMO: dict[bytes, Any] = {}
_MEMO_SIZE = 256
_MEMO_LOCK = threading.Lock()


def _reset_memo_lock() -> None:
    # A thread of the parent may have held the lock at fork(): the child's
    # copy would stay locked forever.
    global _MEMO_LOCK  # noqa: PLW0603 - replaced, in the child only
    _MEMO_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_memo_lock)
# Values orjson would encode like a plain dict (dataclasses, datetimes) but
# `_normalize` does not: sent to the walk.
_MEMO_OPTIONS = (
    0 if _orjson is None else _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME
)


def _canonical_memo(value: Any) -> Any:
    """`_normalize` of ``value``, or its canonical JSON as an orjson Fragment.

    Two values with the same raw orjson text have the same canonical text
    (orjson and `_normalize` agree on every type orjson accepts here, and
    both write floats in shortest round-trip form) except NaN and infinities,
    which orjson writes as ``null``: text containing ``null`` is not memoized.
    """
    if _orjson is None:
        return _normalize(value)
    try:
        raw: bytes = _orjson.dumps(value, option=_MEMO_OPTIONS)
    except TypeError:  # a type orjson refuses (or passes through): the walk decides
        return _normalize(value)
    if len(raw) < 256 or b"null" in raw:
        return _normalize(value)  # small: the walk is as fast as the lookup
    canonical = _MEMO.get(raw)
    if canonical is None:
        canonical = _Canonical(_encode_normalized(_normalize(value)))
        with _MEMO_LOCK:
            while len(_MEMO) >= _MEMO_SIZE:
                del _MEMO[next(iter(_MEMO))]
            _MEMO[raw] = canonical
    return canonical


def _canonical_messages(messages: list[Any]) -> list[Any]:
    """`_normalize` of a message list, with tool call ids renumbered by position.

    Providers make tool call ids random, so without the renumbering every
    agent step after a tool call would be a new request. The bulk of a large
    request is messages in the plain wire shape (string values, tool calls of
    string fields): those are already canonical and are passed to the encoder
    as they are (copied only where an id is renamed), so a long conversation
    costs a type check per value instead of a deep copy. Anything else takes
    the general walk.
    """
    ids: dict[str, str] = {}

    def rename(value: Any) -> Any:
        if type(value) is not str:
            return value
        new = ids.get(value)
        if new is None:
            new = ids[value] = f"call_{len(ids)}"
        return new

    out: list[Any] = []
    for message in messages:
        if _plain_message(message):
            if message.get("tool_calls") is None and "tool_call_id" not in message:
                out.append(message)  # keys are checked by the encoder
                continue
            copy = dict(message)  # shallow: the renaming below replaces what it changes
        elif isinstance(message, Mapping):
            copy = _normalize(message)
        else:
            out.append(_normalize(message))
            continue
        calls = copy.get("tool_calls")
        if type(calls) is list:
            copy["tool_calls"] = [
                ({**call, "id": rename(call.get("id"))} if type(call) is dict else call)
                for call in calls
            ]
        if "tool_call_id" in copy:
            copy["tool_call_id"] = rename(copy["tool_call_id"])
        out.append(copy)
    return out


def _plain_message(message: Any) -> bool:
    """Whether a message is in the plain wire shape, already canonical: a dict
    of strings and None whose ``tool_calls`` (if any) are dicts of strings,
    None and dicts of those. Keys are checked by the encoder."""
    if type(message) is not dict:
        return False
    for key, value in message.items():
        if value is None or type(value) is str:
            continue
        if key != "tool_calls" or type(value) is not list:
            return False
        for call in value:
            if type(call) is not dict:
                return False
            for field in call.values():
                if field is None or type(field) is str:
                    continue
                if type(field) is not dict:
                    return False
                for leaf in field.values():
                    if leaf is not None and type(leaf) is not str:
                        return False
    return True


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
        message = messages[0]
        if _orjson is not None and not getattr(message, "tool_calls", None):
            # The common case, written straight as its canonical JSON.
            text = message.text  # a str subclass in langchain-core 1.x
            if isinstance(text, str):
                try:
                    data = b'{"text":' + _orjson.dumps(text) + b',"tool_calls":[]}'
                except TypeError:  # lone surrogates: the general path below
                    pass
                else:
                    return _sha256_bytes(data)
        return sha256_hex(message_output(message))
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
