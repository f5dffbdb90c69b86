"""OpenTelemetry export on the real model: the spans OpenTelemetry's openai-v2
instrumentation makes for calls to llama.cpp carry seedlock's record and
verdict in the OTLP receiver, a real drift included (flash attention turned
off changes the output under the same fingerprint). docs/otel.md shows this
test's output (run it with ``-s``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from langchain_seedlock import LockedChatOpenAI, SeedLock, SeedLockCallbackHandler, SeedLockOTel
from langchain_seedlock.local import MODEL_NAME, LocalServer
from tests._fixtures.otlp import Otel, SpanOut

pytestmark = pytest.mark.llama

PROMPT = "Write a short story about a robot who learns to paint, in three sentences."
LOCK = SeedLock(seed=1, temperature=0.7, max_tokens=32)


def show(span: SpanOut) -> str:
    keep = {k: v for k, v in sorted(span.attributes.items())}
    events = [{"name": name, **attrs} for name, attrs in span.events]
    return json.dumps(
        {"name": span.name, "scope": span.scope, "attributes": keep, "events": events},
        indent=2,
    )


def test_openai_v2_spans_on_the_real_model(
    llama_server: LocalServer,
    llama_server_factory: Callable[..., LocalServer],
    otel: Otel,
    llama_report: Callable[[str], None],
) -> None:
    handler = SeedLockCallbackHandler(
        otel=SeedLockOTel(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    )

    def model(base_url: str) -> LockedChatOpenAI:
        return LockedChatOpenAI(
            model=MODEL_NAME, base_url=base_url, api_key="sk-local", max_retries=0,
            timeout=120, lock=LOCK,
        )  # fmt: skip

    stable = model(llama_server.base_url)
    texts = [stable.invoke(PROMPT, config={"callbacks": [handler]}).text for _ in range(2)]
    streamed = "".join(c.text for c in stable.stream(PROMPT, config={"callbacks": [handler]}))
    drifted_server = llama_server_factory(slots=1, cache_prompt=False, flash_attn="off")
    drifted = model(drifted_server.base_url).invoke(PROMPT, config={"callbacks": [handler]}).text
    handler.flush()

    spans = otel.chat_spans()
    assert len(spans) == 4
    assert texts[0] == texts[1] == streamed  # the reproducible setup reproduces
    for span in spans:
        assert span.scope != "langchain_seedlock"  # openai-v2's spans
        assert span.attributes["gen_ai.request.seed"] == 1
        assert span.attributes["openai.response.system_fingerprint"]  # the build label
    invoke_hash = spans[0].attributes["seedlock.request_hash"]
    assert spans[1].attributes["seedlock.request_hash"] == invoke_hash
    verdicts = [s.attributes["seedlock.variant"] for s in spans]
    assert verdicts[:2] == ["first", "reproduced"]
    labels = [attrs["gen_ai.evaluation.score.label"] for s in spans for n, attrs in s.events
              if n == "gen_ai.evaluation.result"]  # fmt: skip
    changed = drifted != texts[0]
    assert verdicts[3] == ("new" if changed else "reproduced")
    # LocalServer declares its flags: the change is explained by the backend change.
    assert labels[-1] == ("explained" if changed else "reproduced")
    llama_report(
        f"otel: 4 openai-v2 spans carry seed, fingerprint and verdict {verdicts}; "
        f"flash attention off changed the output: {changed}"
    )
    print("\n".join(show(s) for s in (spans[1], spans[2], spans[3])))
    rate = [
        (attrs["openai.response.system_fingerprint"], attrs["seedlock.backend_id"], value)
        for name, attrs, value in otel.collect().metrics
        if name == "seedlock.reproducibility_rate" and attrs["gen_ai.request.model"] == MODEL_NAME
    ]
    print("seedlock.reproducibility_rate", rate)
