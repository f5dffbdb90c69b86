"""Canonical JSON and hashes: properties that must hold for baselines to compare."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage

from langchain_seedlock._hashing import canonical_json, output_hash, request_hash, sha256_hex

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8))
def test_key_order_does_not_matter(data: dict[str, object]) -> None:
    reversed_order = dict(reversed(list(data.items())))
    assert sha256_hex(data) == sha256_hex(reversed_order)


@given(json_values)
def test_canonical_json_is_valid_json_and_idempotent(value: object) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text


@given(st.integers(-(2**53), 2**53))
def test_integral_floats_hash_like_ints(n: int) -> None:
    assert sha256_hex({"t": n}) == sha256_hex({"t": float(n)})


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
def test_distinct_numbers_hash_differently(x: float) -> None:
    assert sha256_hex(x) != sha256_hex(round(x) if round(x) != x else x + 1)


@given(st.text(min_size=1))
def test_unicode_is_hashed_as_is(text: str) -> None:
    assert sha256_hex({"content": text}) != sha256_hex({"content": text + "\u200b"})
    assert canonical_json(text) == json.dumps(text, ensure_ascii=False)


def test_booleans_are_not_numbers() -> None:
    assert sha256_hex({"x": True}) != sha256_hex({"x": 1})


def test_request_hash_ignores_transport_and_alias_spelling() -> None:
    base = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 1,
        "max_tokens": 9,
    }
    streamed = {**base, "stream": True, "stream_options": {"include_usage": True}}
    aliased = {**{k: v for k, v in base.items() if k != "max_tokens"}, "max_completion_tokens": 9}
    assert (
        request_hash("openai", base)
        == request_hash("openai", streamed)
        == request_hash("openai", aliased)
    )
    assert request_hash("openai", base) != request_hash("azure", base)
    assert request_hash("openai", base) != request_hash("openai", {**base, "seed": 2})


def test_output_hash_ignores_tool_call_ids() -> None:
    a = AIMessage(content="", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "call_1"}])
    b = AIMessage(content="", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "call_2"}])
    c = AIMessage(content="", tool_calls=[{"name": "f", "args": {"x": 2}, "id": "call_1"}])
    assert output_hash([a]) == output_hash([b]) != output_hash([c])


def test_hash_is_the_same_in_another_process() -> None:
    value = {"b": [1.0, "é", {"z": None, "a": 2}], "a": "日本"}
    code = (
        "from langchain_seedlock._hashing import sha256_hex;"
        "print(sha256_hex({'a': '日本', 'b': [1, 'é', {'a': 2, 'z': None}]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == sha256_hex(value)
    # Pinned value: changing canonicalization breaks every stored baseline.
    assert sha256_hex(value) == "b000838cb92f73c0f8de1571e5d5147d941228a5f4422e2e0b7a20c85fa7a2a6"


def test_request_hash_ignores_random_tool_call_ids() -> None:
    def conversation(call_id: str, args: str = '{"q": 1}') -> dict[str, object]:
        return {
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "f", "arguments": args},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call_id, "content": "42"},
            ],
        }

    assert request_hash("openai", conversation("call_abc")) == request_hash(
        "openai", conversation("call_xyz")
    )
    assert request_hash("openai", conversation("call_abc")) != request_hash(
        "openai", conversation("call_abc", '{"q": 2}')
    )


@given(json_values)
def test_fast_encoder_gives_the_stdlib_bytes(value: object) -> None:
    # The hashes must not depend on whether orjson is installed.
    from langchain_seedlock import _hashing

    normalized = _hashing._normalize(value)
    fast = _hashing._encode_normalized(normalized)
    fast_text = fast.decode("utf-8") if isinstance(fast, bytes) else fast
    assert fast_text == _hashing._ENCODER.encode(normalized)
    assert _hashing._orjson is not None  # the fast path is the one under test here


# -- request_hash's fast paths against its definition ------------------------------
def _reference_request_hash(provider: str, payload: dict[str, object]) -> str:
    """The definition, written the slow and obvious way: aliases, no transport
    keys, tool call ids renumbered by position, then the canonical walk."""
    from langchain_seedlock import _hashing

    body: dict[str, object] = {
        k: v
        for k, v in _hashing.normalize_params(payload).items()
        if k not in _hashing.TRANSPORT_KEYS
    }
    body["provider"] = provider
    messages = body.get("messages")
    if isinstance(messages, list):
        ids: dict[str, str] = {}

        def rename(value: object) -> object:
            return ids.setdefault(value, f"call_{len(ids)}") if isinstance(value, str) else value

        renamed = []
        for original in messages:
            message = dict(original) if isinstance(original, dict) else original
            if isinstance(message, dict):
                if isinstance(message.get("tool_calls"), list):
                    message["tool_calls"] = [
                        {**c, "id": rename(c.get("id"))} if isinstance(c, dict) else c
                        for c in message["tool_calls"]
                    ]
                if "tool_call_id" in message:
                    message["tool_call_id"] = rename(message["tool_call_id"])
            renamed.append(message)
        body["messages"] = renamed
    return sha256_hex(body)


_ids = st.sampled_from(["call_a", "call_b", "call_c"]) | st.none() | st.integers(0, 3)
_text = st.text(max_size=12) | st.none()
_tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": st.text(max_size=5), "arguments": _text}),
        },
        optional={"id": _ids},
    )
    | json_values,
    max_size=3,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
        optional={
            "content": _text | json_values,
            "tool_calls": _tool_calls,
            "tool_call_id": _ids,
            "name": _text,
        },
    )
    | json_values,
    max_size=6,
)
# Large enough (> 256 bytes of JSON) to take the memoized path.
_tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {
                    "name": st.text(min_size=1, max_size=5),
                    "description": st.text(min_size=300, max_size=310),
                    "parameters": json_values,
                }
            ),
        }
    ),
    max_size=3,
)


@given(
    _messages,
    _tools,
    st.floats(0, 2) | st.integers(0, 2) | st.none(),
    st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=2),
)
def test_request_hash_fast_paths_agree_with_the_definition(
    messages: list[object], tools: list[object], temperature: object, stop: object
) -> None:
    payload = {
        "model": "m",
        "messages": messages,
        "tools": tools,
        "temperature": temperature,
        "stop": stop,
        "max_completion_tokens": 5,
        "stream": True,
    }
    expected = _reference_request_hash("openai", payload)
    assert request_hash("openai", payload) == expected
    assert request_hash("openai", payload) == expected  # memoized the second time


def test_memoized_values_keep_nan_apart_from_null() -> None:
    # orjson writes NaN as null: the memo must not make them one value.
    schema = {"description": "x" * 400, "default": None}
    with_nan = {**schema, "default": float("nan")}
    first = request_hash("openai", {"model": "m", "tools": [schema]})
    assert request_hash("openai", {"model": "m", "tools": [with_nan]}) != first
    assert request_hash("openai", {"model": "m", "tools": [schema]}) == first


def test_memoized_values_survive_the_stdlib_fallback() -> None:
    # A message with a non-string key sends the whole body to the stdlib
    # encoder, memoized tools included.
    tools = [{"description": "y" * 400, "default": 0.5, "n": 2.0}]
    payload = {"model": "m", "tools": tools, "messages": [{"role": "user", 1: "int key"}]}
    expected = _reference_request_hash("openai", payload)
    request_hash("openai", {"model": "m", "tools": tools})  # memoize the tools first
    assert request_hash("openai", payload) == expected


@given(st.text(), st.sampled_from([None, "x"]))
def test_output_hash_fast_path_is_the_canonical_hash(text: str, name: str | None) -> None:
    from langchain_seedlock._hashing import message_output

    message = AIMessage(content=text, name=name)
    assert output_hash([message]) == sha256_hex(message_output(message))


@given(st.binary(max_size=5000))
def test_small_and_large_inputs_hash_alike(data: bytes) -> None:
    import hashlib

    from langchain_seedlock._hashing import _sha256_bytes

    assert _sha256_bytes(data) == hashlib.sha256(data).hexdigest()
