"""Fan-out: 1,000 concurrent ``ainvoke`` (asyncio.gather), bare ChatOpenAI vs
the locked model + SeedLockCallbackHandler with a SQLite store.

Each call has its own prompt (a map over 1,000 documents), so every call is
a new request hash: the monitor's cache misses and it reads the store. Budget
(issue 7): throughput >= 0.9 of the bare call; no lost records (the store
counts exactly ``--calls`` calls after ``flush()``, per repetition).

    .venv/bin/python bench/fanout.py [--calls 1000] [--repeat 5] [--backend http]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    median,
    prompts,
    settle,
    table,
    verdict,
)

from langchain_seedlock import SeedLockCallbackHandler, open_store

RATIO_BUDGET = 0.9


async def fan_out(model: Any, texts: list[str], config: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(model.ainvoke(t, config=config) for t in texts))
    return time.perf_counter() - t0


async def run(kind: str, calls: int, repeat: int, tmp: Path) -> tuple[list[list[Any]], bool, bool]:
    with backend(kind) as b:
        bare, locked = bare_model(b), locked_model(b)
        warm = prompts(50, "Warm up")
        await fan_out(bare, warm, {})
        await fan_out(locked, warm, {})
        bare_s: list[float] = []
        ours_s: list[float] = []
        lost: list[int] = []
        for r in range(repeat):
            texts = prompts(calls, f"Document {r}")
            store = open_store(f"sqlite:///{tmp / f'fanout-{kind}-{r}.db'}")
            handler = SeedLockCallbackHandler(store=store)
            settle()
            if r % 2:  # alternate the order
                ours_s.append(await fan_out(locked, texts, {"callbacks": [handler]}))
                bare_s.append(await fan_out(bare, texts, {}))
            else:
                bare_s.append(await fan_out(bare, texts, {}))
                ours_s.append(await fan_out(locked, texts, {"callbacks": [handler]}))
            handler.flush(timeout=60)
            stored = sum(x.calls for x in store.requests(limit=10**9))
            lost.append(calls - stored + handler.monitor.dropped)
            handler.close()
            store.close()
    b_med, o_med = median(bare_s), median(ours_s)
    ratio = b_med / o_med
    rows = [
        [f"{kind}: bare ChatOpenAI", calls, repeat, b_med, calls / b_med, 1.0, ""],
        [
            f"{kind}: locked + handler (SQLite)",
            calls,
            repeat,
            o_med,
            calls / o_med,
            ratio,
            f"{sum(lost)} lost of {calls * repeat}",
        ],
    ]
    return rows, ratio >= RATIO_BUDGET, sum(lost) == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=["inproc", "http", "both"], default="inproc")
    args = parser.parse_args()
    configure_structlog()
    header(f"Fan-out: {args.calls} concurrent ainvoke")
    kinds = ["inproc", "http"] if args.backend == "both" else [args.backend]
    rows: list[list[Any]] = []
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            r, ratio_ok, none_lost = asyncio.run(run(kind, args.calls, args.repeat, Path(tmp)))
            rows += r
            verdicts.append(
                f"{verdict(ratio_ok)}  {kind}: throughput ratio {r[1][5]:.3f} >= {RATIO_BUDGET}"
            )
            verdicts.append(f"{verdict(none_lost)}  {kind}: no lost records ({r[1][6]})")
    print(
        table(
            ["variant", "calls", "runs", "median s", "calls/s", "throughput ratio", "records"],
            rows,
        )
    )
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
