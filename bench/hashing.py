"""Hashing a large request: a ~100k-token agent conversation with tools.

Tokens are estimated as characters / 4 (OpenAI's rule of thumb for English;
no tokenizer is needed to build the payload). The budget is a ratio to the
bare call's client CPU for the same request, measured in ``bench/ratios.py``
(issue 13); here each path is timed alone, in wall time. Three paths:

- ``request_hash(wire payload)``: what a locked model computes per call, on
  the OpenAI request body it is about to send;
- ``request_hash_from_messages``: what the callback handler computes for an
  unlocked model (LangChain messages -> OpenAI format -> hash);
- for scale, langchain-openai's own ``_get_request_payload`` for the same
  conversation (bare and locked): the work every call does anyway.

    .venv/bin/python bench/hashing.py [--tokens 100000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from common import backend, bare_model, header, locked_model, median, percentile, table
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_seedlock._hashing import request_hash, request_hash_from_messages

WORDS = [
    "the",
    "orbit",
    "of",
    "each",
    "planet",
    "follows",
    "an",
    "ellipse",
    "with",
    "the",
    "sun",
    "at",
    "one",
    "focus",
    "while",
    "its",
    "period",
    "squared",
    "grows",
    "with",
    "the",
    "cube",
    "of",
    "the",
    "semi",
    "major",
    "axis",
    "and",
    "observers",
    "record",
    "transit",
    "times",
    "spectra",
    "albedo",
    "and",
    "temperature",
    "for",
    "every",
    "measured",
    "body",
]


def text(n_chars: int, salt: int) -> str:
    out: list[str] = []
    size = 0
    i = salt
    while size < n_chars:
        w = WORDS[i % len(WORDS)]
        out.append(w)
        size += len(w) + 1
        i += 7
    return " ".join(out)


def tools(n: int = 20) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": text(300, i),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": text(80, i + 1)},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "precision": {"type": "number", "default": 0.5},
                        "units": {"type": "string", "enum": ["si", "imperial"]},
                    },
                    "required": ["query"],
                },
            },
        }
        for i in range(n)
    ]


def conversation(tokens: int) -> list[BaseMessage]:
    """System prompt, then turns of: user, assistant tool calls, tool results, answer."""
    target = tokens * 4
    messages: list[BaseMessage] = [SystemMessage(text(2000, 0))]
    size = 2000
    turn = 0
    while size < target:
        calls = [
            {
                "name": f"tool_{(turn + k) % 20}",
                "args": {"query": text(60, turn + k), "limit": 10 + k, "precision": 0.25},
                "id": f"call_{turn}_{k}",
                "type": "tool_call",
            }
            for k in range(2)
        ]
        messages += [
            HumanMessage(text(600, turn)),
            AIMessage(content="", tool_calls=calls),
            *(
                ToolMessage(json.dumps({"result": text(1500, turn + k)}), tool_call_id=c["id"])
                for k, c in enumerate(calls)
            ),
            AIMessage(text(700, turn + 3)),
        ]
        size += 600 + 2 * 150 + 2 * 1520 + 700
        turn += 1
    messages.append(HumanMessage("Summarize everything above in one paragraph."))
    return messages


def time_ms(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    header("Hashing a large request")

    messages = conversation(args.tokens)
    tool_list = tools()
    with backend("inproc") as b:
        bare = bare_model(b).bind_tools(tool_list)
        locked = locked_model(b).bind_tools(tool_list)
        bare_model_obj, locked_model_obj = bare.bound, locked.bound
        payload = bare_model_obj._get_request_payload(messages, **bare.kwargs)
        locked_payload = locked_model_obj._get_request_payload(messages, **locked.kwargs)
    wire = json.dumps(payload)
    print(
        f"conversation: {len(messages)} messages, {len(tool_list)} tools, "
        f"{len(wire):,} characters of request JSON (~{len(wire) // 4:,} tokens at 4 chars/token)\n"
    )
    params = {k: v for k, v in locked_payload.items() if k != "messages"}
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "request_hash(wire payload) [locked model]",
            lambda: request_hash("openai", payload),
        ),
        (
            "request_hash_from_messages [handler, unlocked model]",
            lambda: request_hash_from_messages("openai", messages, params),
        ),
        (
            "langchain-openai _get_request_payload (bare, for scale)",
            lambda: bare_model_obj._get_request_payload(messages, **bare.kwargs),
        ),
        (
            "LockedChatOpenAI._get_request_payload (lock checks, no hash)",
            lambda: locked_model_obj._get_request_payload(messages, **locked.kwargs),
        ),
    ]
    rows = []
    for name, fn in cases:
        ms = time_ms(fn, args.repeat)
        rows.append([name, median(ms), percentile(ms, 90), min(ms)])
    print(table(["path", "median ms", "p90 ms", "min ms"], rows))
    print("\n(the budget, a ratio to the bare call's client CPU: bench/ratios.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
