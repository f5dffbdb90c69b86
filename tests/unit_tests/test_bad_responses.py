"""Malformed server responses through a locked model: a clear outcome, nothing half-written."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from langchain_seedlock import LockedChatOpenAI, MalformedResponseError, SeedLock
from langchain_seedlock._record import MAX_FINGERPRINT_CHARS
from tests._fixtures.stub_openai import StubOpenAI
from tests._fixtures.stub_openai import raw_completion as completion

LOCK = SeedLock(seed=5, temperature=0.1)


def model(stub: StubOpenAI) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="m", base_url=stub.base_url, api_key="sk-x", lock=LOCK, max_retries=0
    )


@pytest.mark.parametrize(
    ("fingerprint", "expected"),
    [
        (..., None),
        (None, None),
        ("", None),
        ("fp_ok", "fp_ok"),
        (123, "123"),
        ({"build": 7}, '{"build":7}'),
    ],
)
def test_fingerprint_shapes(stub: StubOpenAI, fingerprint: Any, expected: str | None) -> None:
    stub.raw_response = completion(system_fingerprint=fingerprint)
    msg = model(stub).invoke("hi")
    assert msg.response_metadata["system_fingerprint"] == expected
    assert msg.content == "hello"


def test_huge_fingerprint_is_bounded_and_distinct(stub: StubOpenAI) -> None:
    stub.raw_response = completion(system_fingerprint="f" * 100_000)
    a = model(stub).invoke("hi").response_metadata["system_fingerprint"]
    stub.raw_response = completion(system_fingerprint="f" * 99_999 + "g")
    b = model(stub).invoke("hi").response_metadata["system_fingerprint"]
    assert len(a) <= MAX_FINGERPRINT_CHARS
    assert a != b


def test_missing_usage(stub: StubOpenAI) -> None:
    stub.raw_response = completion(usage=...)
    msg = model(stub).invoke("hi")
    assert msg.usage_metadata is None
    assert msg.response_metadata["seedlock_output_hash"]


def test_empty_choices_is_a_typed_error(stub: StubOpenAI) -> None:
    stub.raw_response = completion(choices=[])
    with pytest.raises(MalformedResponseError, match="no choices"):
        model(stub).invoke("hi")


def test_broken_sse_stream_raises_and_yields_no_record(stub: StubOpenAI) -> None:
    first = {
        "id": "s",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "hel"}, "finish_reason": None}
        ],
    }
    stub.raw_sse = f"data: {json.dumps(first)}\n\ndata: {{not json\n\n".encode()
    seen: list[Any] = []

    def consume() -> None:
        for chunk in model(stub).stream("hi"):
            seen.append(chunk)

    with pytest.raises((openai.APIError, json.JSONDecodeError, ValueError)):
        consume()
    # The record chunk comes only after a complete stream: nothing half-recorded.
    assert all("seedlock_output_hash" not in c.response_metadata for c in seen)


def test_server_error_is_the_providers_typed_error(stub: StubOpenAI) -> None:
    stub.status = 500
    with pytest.raises(openai.InternalServerError):
        model(stub).invoke("hi")
