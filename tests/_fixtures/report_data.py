"""Synthetic store contents for ``seedlock report`` tests: many calls, known answers.

`fill` writes ``calls`` calls over two models, each with a backend identity
change half way, a few percent of outputs drifting, an ``output_drift``
event (with a divergence position) for each new variant and a
``fingerprint_changed`` event for each change; it returns the calls it wrote
so a test can compute what the store should answer without the store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from langchain_seedlock._events import (
    FINGERPRINT_CHANGED,
    K_DIFF_CHAR,
    K_EXPLAINED,
    K_FINGERPRINT,
    K_MODEL_KEY,
    K_PREVIOUS_FINGERPRINT,
    K_PROVIDER,
    K_REQUEST_HASH,
    K_REQUEST_MODEL,
    K_SUMMARY,
    OUTPUT_DRIFT,
)
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store._base import BaselineStore, StoredEvent

T0 = 1_790_000_000.0  # a fixed start (2026-09-21): pages are reproducible
SPAN = 2 * 86400.0
MODELS = ("gpt-4o-mini", "smollm2")


@dataclass(frozen=True)
class Call:
    model_key: str
    backend_id: str
    request_hash: str
    output_hash: str
    at: float


def fill(store: BaselineStore, calls: int, *, seed: int = 7, batch: int = 2000) -> list[Call]:
    rng = random.Random(seed)
    requests = max(calls // 5, 1)
    written: list[Call] = []
    records: list[CallRecord] = []
    events: list[StoredEvent] = []
    seen: set[tuple[str, str, str]] = set()
    for i in range(calls):
        at = T0 + SPAN * i / calls
        model = MODELS[i % 2]
        late = i >= calls // 2
        fingerprint = f"fp_{model[:3]}_{'b' if late else 'a'}"
        if late and i // 2 == calls // 4:
            events.append(
                StoredEvent(
                    FINGERPRINT_CHANGED,
                    at,
                    {
                        K_MODEL_KEY: f"openai:{model}",
                        K_FINGERPRINT: fingerprint,
                        K_PREVIOUS_FINGERPRINT: f"fp_{model[:3]}_a",
                    },
                )
            )
        rh = f"{model[:3]}{rng.randrange(requests):061x}"
        # Drift grows over time on the second model: the rate falls.
        p_drift = 0.02 if model == MODELS[0] else 0.02 + 0.1 * i / calls
        output = f"out{rng.randrange(1, 4)}" if rng.random() < p_drift else "out0"
        record = CallRecord(
            provider="openai",
            request_model=model,
            request_hash=rh,
            output_hash=output,
            seed=1,
            system_fingerprint=fingerprint,
            at=at,
            in_flight=i % 20 + 1,  # every in-flight bucket gets calls
        )
        key = (rh, record.backend_id, output)
        repeat = any((rh, record.backend_id, o) in seen for o in ("out0", "out1", "out2", "out3"))
        record.known = (key in seen) if repeat else None  # as the monitor sets it
        records.append(record)
        if key not in seen:
            if any((rh, record.backend_id, o) in seen for o in ("out0", "out1", "out2", "out3")):
                events.append(
                    StoredEvent(
                        OUTPUT_DRIFT,
                        at,
                        {
                            K_PROVIDER: "openai",
                            K_REQUEST_MODEL: model,
                            K_REQUEST_HASH: rh,
                            K_EXPLAINED: False,
                            K_DIFF_CHAR: rng.randrange(5, 400),
                            K_SUMMARY: f"new variant of {rh[:12]}",
                            "level": "warning",
                        },
                    )
                )
            seen.add(key)
        written.append(Call(record.model_key, record.backend_id, rh, output, at))
        if len(records) >= batch:
            store.write(records, events)
            records, events = [], []
    store.write(records, events)
    return written
