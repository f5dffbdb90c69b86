"""LangChain messages to OpenAI message dicts, fast, for the request hash.

The callback handler hashes every chat-model request it sees, and for models it
does not wrap it must first turn LangChain messages into the OpenAI wire format.
``langchain_core.messages.convert_to_openai_messages`` does that in ~2.5 ms on a
~100k-token agent conversation: too slow for a hash computed on every call.

``messages_to_wire`` returns exactly what ``list(convert_to_openai_messages(list(
messages)))`` returns (same keys, values and value types), so hashes are
unchanged. It is exact by construction: the fast path below only takes messages
whose conversion is a handful of field copies and restates those steps of
``convert_to_openai_messages`` line for line (``name`` if truthy, ``tool_calls``
with ``json.dumps(args, ensure_ascii=False)``, ``refusal`` if truthy,
``tool_call_id``, string ``content``); it ignores what that function ignores
(ids, ``response_metadata``, ``usage_metadata``, ``invalid_tool_calls``, a tool
message's ``status`` and ``artifact``). Every other message is converted on its
own by ``convert_to_openai_messages`` itself, which is exact because that
function converts each message independently of its neighbours. It is exact by
test too: ``tests/unit_tests/test_wire.py`` compares both on explicit cases and
on generated conversations.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
)

# Exact types only: a subclass may convert differently (e.g. override ``content``).
_ROLES: dict[type, str] = {
    HumanMessage: "user",
    AIMessage: "assistant",
    ToolMessage: "tool",
    SystemMessage: "system",
}


def _args_encoder() -> Callable[[Any], str]:
    """``json.dumps(args, ensure_ascii=False)`` without its per-call set-up.

    ``json.dumps`` builds a ``JSONEncoder`` and then a C encoder on every call:
    most of its cost on small tool arguments. Build that C encoder once, with
    the same arguments ``JSONEncoder.iterencode`` passes, except the markers of
    its circular-reference check (mutable, so not shareable): a cycle then
    fails with RecursionError instead, and any failure falls back to
    ``convert_to_openai_messages``, which raises its own error.
    """
    plain = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (not CPython)
        return plain.encode
    encode = make(
        None,
        plain.default,
        json.encoder.encode_basestring,
        plain.indent,
        plain.key_separator,
        plain.item_separator,
        plain.sort_keys,
        plain.skipkeys,
        plain.allow_nan,
    )
    return lambda args: "".join(encode(args, 0))


_encode_args = _args_encoder()


def messages_to_wire(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI-format dicts for messages, for hashing requests we do not send."""
    messages = list(messages)
    try:
        return _convert(messages)
    except Exception:  # noqa: BLE001 - re-raised below, with the reference's message
        # Only the reference knows its error (e.g. the index of a bad content
        # block in the whole list): let it raise it, or succeed if it does.
        return list(convert_to_openai_messages(messages))


def _convert(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role = _ROLES.get(type(m))
        if (
            role is None
            or type(m.content) is not str
            # A system message can ask for another role ("developer").
            or (role == "system" and "__openai_role__" in m.additional_kwargs)
        ):
            out.extend(convert_to_openai_messages([m]))
            continue
        wire: dict[str, Any] = {"role": role}
        if m.name:
            wire["name"] = m.name
        if role == "assistant" and (calls := m.tool_calls):  # type: ignore[attr-defined]
            wire["tool_calls"] = [
                {
                    "type": "function",
                    "id": c["id"],
                    "function": {"name": c["name"], "arguments": _encode_args(c["args"])},
                }
                for c in calls
            ]
        if refusal := m.additional_kwargs.get("refusal"):
            wire["refusal"] = refusal
        if role == "tool":
            wire["tool_call_id"] = m.tool_call_id  # type: ignore[attr-defined]
        wire["content"] = m.content
        out.append(wire)
    return out
