"""messages_to_wire returns exactly what convert_to_openai_messages returns."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
)

from langchain_seedlock import _wire
from langchain_seedlock._wire import messages_to_wire


def reference(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return list(convert_to_openai_messages(list(messages)))


def assert_same(messages: list[BaseMessage]) -> None:
    got, want = messages_to_wire(messages), reference(messages)
    assert got == want
    # Catches type differences that == hides (1 vs 1.0 vs True).
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def call(id_: Any = "call_1", name: str = "lookup", **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": id_, "type": "tool_call"}


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Half(float):
    def __repr__(self) -> str:
        return "half"


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
CASES: dict[str, BaseMessage] = {
    # Fast path.
    "human": HumanMessage("hi"),
    "human empty": HumanMessage(""),
    "human unicode quotes": HumanMessage('héllo "wörld" \\ \n \u2028 😀'),
    "system": SystemMessage("be brief"),
    "ai": AIMessage("an answer"),
    "ai empty": AIMessage(""),
    "ai tool call": AIMessage("", tool_calls=[call(q="x", limit=10, p=0.25)]),
    "ai text and tool calls": AIMessage("let me look", tool_calls=[call(), call("call_2")]),
    "ai nested args": AIMessage(
        "", tool_calls=[call(a={"b": [1, 2.0, True, None, {"c": 'ü"\\'}]}, d=[], e={})]
    ),
    "ai float args": AIMessage("", tool_calls=[call(x=1.0, y=1e300, z=-0.0, n=math.nan)]),
    "ai unicode args": AIMessage("", tool_calls=[call(q="日本語 😀 \u2028", k="naïve")]),
    "ai empty args": AIMessage("", tool_calls=[call()]),
    "ai odd arg types": AIMessage(
        "", tool_calls=[call(e=Color.RED, n=Level.HIGH, f=Half(0.5), t=(1, "a"), k={1: 2, None: 3})]
    ),
    "ai tool call id None": AIMessage("", tool_calls=[call(None)]),
    "ai invalid tool calls": AIMessage(
        "",
        invalid_tool_calls=[
            {"name": "f", "args": "{bad", "id": "c", "error": "x", "type": "invalid_tool_call"}
        ],
    ),
    "ai metadata": AIMessage(
        "x",
        id="run-1",
        response_metadata={"model_name": "gpt", "system_fingerprint": "fp"},
        usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    ),
    "ai refusal": AIMessage("", additional_kwargs={"refusal": "I can't"}),
    "ai refusal None": AIMessage("", additional_kwargs={"refusal": None}),
    "ai raw tool calls kwargs": AIMessage(
        "",
        additional_kwargs={
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]
        },
    ),
    "tool": ToolMessage('{"result": 1}', tool_call_id="call_1"),
    "tool status error": ToolMessage("boom", tool_call_id="call_1", status="error"),
    "tool artifact": ToolMessage("ok", tool_call_id="call_1", artifact={"rows": [1, 2]}),
    "tool non-str content": ToolMessage(3, tool_call_id="call_1"),  # coerced to "3"
    "name set": HumanMessage("hi", name="alice"),
    "name empty": HumanMessage("hi", name=""),
    "tool name": ToolMessage("ok", tool_call_id="c", name="lookup"),
    "ai name": AIMessage("", name="bot", tool_calls=[call()]),
    "id set": HumanMessage("hi", id="msg-1"),
    "additional kwargs": HumanMessage("hi", additional_kwargs={"foo": "bar"}),
    # Fallback.
    "list content text": HumanMessage([{"type": "text", "text": "a"}, "b"]),
    "list content image": HumanMessage([{"type": "text", "text": "look"}, IMAGE]),
    "list content empty": AIMessage([]),
    "ai list content tool calls": AIMessage([{"type": "text", "text": "a"}], tool_calls=[call()]),
    "tool list content": ToolMessage([{"type": "text", "text": "a"}], tool_call_id="c"),
    "developer role": SystemMessage("dev", additional_kwargs={"__openai_role__": "developer"}),
    "chat message": ChatMessage("hi", role="critic"),
    "function message": FunctionMessage("42", name="f"),
    "ai chunk": AIMessageChunk("", tool_calls=[call()]),
    "human chunk": HumanMessageChunk("hi"),
    "anthropic tool_result block": HumanMessage(
        [{"type": "tool_result", "tool_use_id": "c", "content": "r"}]
    ),
}


@pytest.mark.parametrize("message", CASES.values(), ids=CASES.keys())
def test_case(message: BaseMessage) -> None:
    assert_same([message])
    assert_same([SystemMessage("s"), message, HumanMessage("h"), message])


def test_all_cases_together() -> None:
    assert_same(list(CASES.values()))
    assert messages_to_wire([]) == reference([]) == []


def test_accepts_any_iterable() -> None:
    messages = list(CASES.values())
    assert messages_to_wire(iter(messages)) == reference(messages)  # type: ignore[arg-type]


def test_errors_are_the_reference_errors() -> None:
    bad_block = HumanMessage([{"type": "image"}])  # no source: the error names its index
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    for messages in (
        [HumanMessage("a"), bad_block],
        [HumanMessage("a"), RemoveMessage(id="x")],  # unknown type
        [AIMessage("", tool_calls=[call(x={1, 2})])],  # args not JSON serializable
        [AIMessage("", tool_calls=[call(x=cycle)])],  # circular args
    ):
        with pytest.raises(Exception) as want:  # noqa: PT011 - any error, compared below
            reference(messages)
        with pytest.raises(type(want.value)) as got:
            messages_to_wire(messages)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match=r"messages\[1\]\.content\[0\]"):
        messages_to_wire([HumanMessage("a"), bad_block])


def plain_conversation() -> list[BaseMessage]:
    return [
        SystemMessage("sys"),
        HumanMessage("q", name="u"),
        AIMessage("", tool_calls=[call(q="x"), call("call_2", n=1.5)]),
        ToolMessage("r1", tool_call_id="call_1"),
        ToolMessage("r2", tool_call_id="call_2", status="error", artifact=[1]),
        AIMessage(
            "done",
            id="m",
            usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        ),
        AIMessage("", additional_kwargs={"refusal": "no"}),
    ]


def test_fast_path_taken_for_plain_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = plain_conversation()
    want = reference(messages)

    def slow(*_: object, **__: object) -> list[dict[str, Any]]:
        raise AssertionError("fast-path shapes went through convert_to_openai_messages")

    monkeypatch.setattr(_wire, "convert_to_openai_messages", slow)
    assert messages_to_wire(messages) == want


def test_fallback_converts_only_the_odd_message(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[BaseMessage]] = []

    def spy(messages: list[BaseMessage]) -> list[dict[str, Any]]:
        seen.append(list(messages))
        return list(convert_to_openai_messages(messages))

    odd = HumanMessage([{"type": "text", "text": "a"}, IMAGE])
    messages = [*plain_conversation(), odd, *plain_conversation()]
    monkeypatch.setattr(_wire, "convert_to_openai_messages", spy)
    assert messages_to_wire(messages) == reference(messages)
    assert seen == [[odd]]


# --- generated conversations ------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", '"', "\\", '\\"', "\n", "é", "😀", "\u2028", "\x00"]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, both sides alike
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
names = st.none() | st.just("") | texts
ids = st.none() | texts
tool_calls = st.lists(
    st.builds(
        lambda name, args, id_: {"name": name, "args": args, "id": id_, "type": "tool_call"},
        texts,
        st.dictionaries(texts, json_values, max_size=4),
        st.none() | texts,
    ),
    max_size=3,
)
extra_kwargs = st.sampled_from(
    [{}, {"refusal": "no"}, {"refusal": None}, {"refusal": ""}, {"other": 1}]
)
blocks = st.lists(
    texts.map(lambda t: {"type": "text", "text": t}) | texts | st.just(IMAGE), max_size=3
)
contents = texts | texts | texts | blocks  # mostly strings: the fast path


def ai(content: Any, calls: list[dict[str, Any]], name: Any, id_: Any, kw: Any) -> AIMessage:
    return AIMessage(content, tool_calls=calls, name=name, id=id_, additional_kwargs=kw)


messages = st.one_of(
    st.builds(HumanMessage, contents, name=names, id=ids, additional_kwargs=extra_kwargs),
    st.builds(SystemMessage, contents, name=names, additional_kwargs=extra_kwargs),
    st.builds(ai, contents, tool_calls, names, ids, extra_kwargs),
    st.builds(
        ToolMessage,
        contents,
        tool_call_id=texts,
        name=names,
        status=st.sampled_from(["success", "error"]),
        artifact=st.none() | json_values,
    ),
    st.builds(ChatMessage, contents, role=texts.filter(bool)),
    st.builds(FunctionMessage, contents, name=texts),
    st.builds(AIMessageChunk, contents, name=names),
    st.builds(SystemMessage, texts, additional_kwargs=st.just({"__openai_role__": "developer"})),
)


@given(json_values)
def test_args_encoding_is_json_dumps(value: Any) -> None:
    assert _wire._encode_args(value) == json.dumps(value, ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=12))
def test_generated_conversations(conversation: list[BaseMessage]) -> None:
    assert_same(conversation)
