"""Long runs: resident memory and in-process state after many calls.

1. The drift monitor alone (the per-call core every door feeds): 100,000
   calls over 10,000 distinct requests, synthetic `CallRecord`s through
   `DriftMonitor.observe` with a SQLite store (background writer included).
2. The real path, smaller: the locked model + `SeedLockCallbackHandler`
   (SQLite) on the in-process stub, ``--model-calls`` calls over
   ``--model-requests`` distinct prompts.

Budget (issue 7): RSS grows by at most 20 MB over run 1; the monitor's
caches and the handler's run table stay bounded.

    .venv/bin/python bench/memory.py [--calls 100000] [--requests 10000] [--model-calls 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import (
    backend,
    configure_structlog,
    header,
    locked_model,
    prompts,
    rss_mb,
    settle,
    table,
    verdict,
)

from langchain_seedlock import SeedLockCallbackHandler, open_store
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._record import CallRecord

BUDGET_MB = 20.0


def record(i: int, n_requests: int) -> CallRecord:
    req = i % n_requests
    return CallRecord(
        provider="openai",
        request_model="gpt-4o-mini",
        request_hash=f"{req:064x}",
        output_hash=f"{req % 97:064x}",
        seed=123,
        system_fingerprint="fp_bench_1",
        response_model="gpt-4o-mini",
        params={"temperature": 0.7, "max_tokens": 200},
        input_tokens=12,
        output_tokens=40,
        run_id=f"run-{i}",
        output_text=f"answer {req % 97} " * 20,
    )


def monitor_run(tmp: Path, calls: int, n_requests: int) -> tuple[list[list[object]], bool]:
    store = open_store(f"sqlite:///{tmp / 'memory.db'}")
    monitor = DriftMonitor(store)
    settle()
    start = rss_mb()
    rows: list[list[object]] = []
    checkpoints = sorted({calls // 10, calls // 2, calls})
    t0 = time.perf_counter()
    done = 0
    for cp in checkpoints:
        for i in range(done, cp):
            monitor.observe(record(i, n_requests))
        done = cp
        monitor.flush(timeout=120)
        settle()
        rows.append(
            [
                "monitor.observe (synthetic)",
                cp,
                n_requests,
                rss_mb(),
                rss_mb() - start,
                len(monitor._cache.requests),
                len(monitor._cache.models),
                monitor._store._writer.pending,
                monitor.dropped,
            ]
        )
    elapsed = time.perf_counter() - t0
    stored = sum(r.calls for r in store.requests(limit=10**9))
    monitor.close()
    store.close()
    print(
        f"monitor run: {calls:,} calls in {elapsed:.1f} s ({calls / elapsed:,.0f}/s incl. "
        f"flushes); {stored:,} calls in the store\n"
    )
    growth = rows[-1][4]
    assert isinstance(growth, float)
    return rows, growth <= BUDGET_MB


def model_run(tmp: Path, calls: int, n_requests: int) -> list[list[object]]:
    rows: list[list[object]] = []
    texts = prompts(n_requests, "Long run")
    with backend("inproc") as b:
        model = locked_model(b)
        store = open_store(f"sqlite:///{tmp / 'model.db'}")
        handler = SeedLockCallbackHandler(store=store)
        config = {"callbacks": [handler]}
        for i in range(200):  # warm LangChain's and the SDK's own caches
            model.invoke(texts[i % len(texts)], config=config)
        handler.flush()
        settle()
        start = rss_mb()
        done = 0
        for cp in sorted({calls // 2, calls}):
            for i in range(done, cp):
                model.invoke(texts[i % len(texts)], config=config)
            done = cp
            handler.flush(timeout=120)
            settle()
            rows.append(
                [
                    "locked + handler (SQLite), real calls",
                    cp,
                    n_requests,
                    rss_mb(),
                    rss_mb() - start,
                    len(handler.monitor._cache.requests),
                    len(handler.monitor._cache.models),
                    len(handler._runs),
                    handler.monitor.dropped,
                ]
            )
        handler.close()
        store.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--model-calls", type=int, default=5_000)
    parser.add_argument("--model-requests", type=int, default=1_000)
    args = parser.parse_args()
    configure_structlog()
    header("Memory over long runs")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rows, ok = monitor_run(tmp, args.calls, args.requests)
        print(
            table(
                ["run", "calls", "distinct", "RSS MB", "+RSS MB", "cached requests",
                 "cached models", "writer pending", "dropped"],
                rows,
            )
        )  # fmt: skip
        print()
        print(f"{verdict(ok)}  RSS growth after {args.calls:,} calls: {rows[-1][4]:.1f} MB "
              f"<= {BUDGET_MB:.0f} MB")  # fmt: skip
        bounded = all(r[5] <= 4096 for r in rows)  # type: ignore[operator]
        print(f"{verdict(bounded)}  monitor request cache bounded (<= cache_size 4096)\n")
        if args.model_calls:
            mrows = model_run(tmp, args.model_calls, args.model_requests)
            print(
                table(
                    ["run", "calls", "distinct", "RSS MB", "+RSS MB", "cached requests",
                     "cached models", "handler runs held", "dropped"],
                    mrows,
                )
            )  # fmt: skip
            print()
            held = mrows[-1][7]
            print(f"{verdict(held == 0)}  handler holds no finished run ({held} held)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
