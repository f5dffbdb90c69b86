"""Backend identity and calls in flight on the real local model (docs/drift.md).

    .venv/bin/python bench/identity.py [--store sqlite:///identity.db]

1. Eight seeded requests to a one-slot server without prompt cache, twice.
2. The same requests after a restart with a q8_0 KV cache (same build, same
   fingerprint): one ``seedlock.backend_changed`` naming the KV-cache fields,
   and the changed answers explained.
3. The same requests to a default server (4 slots, unified KV cache, prompt
   cache): once one at a time, then twice each, 8 at a time: the in-flight
   count of every call and the drift.

Prints the events and ends with ``seedlock drift`` on the store (the
reproducibility rate by in-flight bucket). Measurements, not assertions:
the tests are tests/integration_tests/test_llama_drift.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_seedlock import LocalServer, LockedChatOpenAI, SeedLock, SeedLockCallbackHandler
from langchain_seedlock.cli import main as seedlock_main
from langchain_seedlock.testing import wait_for_server_info

PROMPT = "Write a short story about a robot who learns to paint, in three sentences."
SEEDS = tuple(range(1, 9))
SHOWN = ("seedlock.backend_changed", "seedlock.output_drift", "seedlock.call")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///identity.db")
    args = parser.parse_args()
    lines: list[dict[str, Any]] = []

    def keep(_: Any, method: str, event: Any) -> Any:
        if event.get("event") in SHOWN:
            lines.append({**event, "level": method})
        raise structlog.DropEvent

    structlog.configure(
        processors=[keep], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    handler = SeedLockCallbackHandler(store=args.store)

    def send(server: LocalServer, seeds: list[int], *, concurrent: bool = False) -> None:
        def one(seed: int) -> None:
            model = LockedChatOpenAI(
                model="SmolLM2-135M-Instruct", base_url=server.base_url, api_key="sk-local",
                max_retries=0, timeout=120,
                lock=SeedLock(seed, temperature=0.7, max_tokens=32),
            )  # fmt: skip
            meta = {"seedlock_label": f"story#{seed}"}
            model.invoke(PROMPT, config={"callbacks": [handler], "metadata": meta})

        if concurrent:
            with ThreadPoolExecutor(len(SEEDS)) as pool:
                list(pool.map(one, seeds))
        else:
            for seed in seeds:
                one(seed)

    def show(title: str) -> None:
        print(f"== {title}")
        for line in lines:
            if line["event"] != "seedlock.call":
                print(json.dumps(line))
        calls = [line for line in lines if line["event"] == "seedlock.call"]
        print("in_flight:", sorted(c.get("seedlock.in_flight") for c in calls))
        print("server_slots:", sorted({str(c.get("seedlock.server_slots")) for c in calls}))
        lines.clear()

    with LocalServer(slots=1, cache_prompt=False, threads=1) as server:
        send(server, list(SEEDS))
        wait_for_server_info()
        send(server, list(SEEDS))
    show("one slot, no prompt cache: baseline, twice")
    with LocalServer(
        slots=1, cache_prompt=False, threads=1, cache_type_k="q8_0", cache_type_v="q8_0"
    ) as server:
        send(server, list(SEEDS))
    show("restarted with a q8_0 KV cache")
    with LocalServer(slots=None, cache_prompt=True, threads=1) as server:
        send(server, list(SEEDS))
        wait_for_server_info()
        lines.clear()
        send(server, list(SEEDS) * 2, concurrent=True)
    show("default server (4 slots, prompt cache): 16 calls, 8 at a time")
    handler.close()
    return seedlock_main(["drift", "--store", args.store, "--limit", "3"])


if __name__ == "__main__":
    raise SystemExit(main())
