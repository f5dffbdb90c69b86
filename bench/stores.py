"""Baseline writes per second through the write path the drift monitor uses:
`BackgroundWriter` (batches of up to 500) -> ``store.write`` (one transaction
of upserts per batch). SQLite in one process and in 4 processes on one file,
PostgreSQL likewise; and, for scale, one transaction per record (what
``DriftMonitor(buffer_size=0)`` does). Every run checks the store's call
count afterwards. Target (issue 7): >= 5,000 writes/s, SQLite, one process.

    .venv/bin/python bench/stores.py [--records 20000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from common import header, postgres_url, table, verdict

from langchain_seedlock import open_store
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store._base import BaselineStore
from langchain_seedlock._store._writer import BackgroundWriter

TARGET = 5000.0


def records(n: int, worker: int) -> list[CallRecord]:
    now = time.time()
    return [
        CallRecord(
            provider="openai",
            request_model="gpt-4o-mini",
            request_hash=f"{worker:08x}{i:056x}",
            output_hash=f"{i % 7:064x}",
            seed=123,
            system_fingerprint="fp_bench_1",
            response_model="gpt-4o-mini",
            params={"temperature": 0.7, "max_tokens": 200},
            input_tokens=12,
            output_tokens=9,
            run_id=f"run-{worker}-{i}",
            at=now,
        )
        for i in range(n)
    ]


def write_batched(store: BaselineStore, recs: list[CallRecord]) -> float:
    writer = BackgroundWriter(store, buffer_size=len(recs) + 1)
    t0 = time.perf_counter()
    for r in recs:
        writer.submit(r)
    ok = writer.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    writer.close()
    if not ok or writer.dropped:
        raise RuntimeError(f"writer did not finish: dropped={writer.dropped}")
    return elapsed


def write_single(store: BaselineStore, recs: list[CallRecord]) -> float:
    t0 = time.perf_counter()
    for r in recs:
        store.write([r])
    return time.perf_counter() - t0


def _worker(url: str, n: int, worker: int, ready: object, go: object, out: object) -> None:
    store = open_store(url)
    recs = records(n, worker)
    ready.put(worker)  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    write_batched(store, recs)
    out.put((t0, time.perf_counter()))  # type: ignore[attr-defined]
    store.close()


def write_processes(url: str, n: int, procs: int) -> float:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=_worker, args=(url, n, w + 1, ready, go, out)) for w in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=120)
    go.set()
    spans = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    return max(end for _, end in spans) - min(start for start, _ in spans)


def calls_in(store: BaselineStore) -> int:
    return sum(r.calls for r in store.requests(limit=10**9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="per process")
    parser.add_argument("--single", type=int, default=1_000, help="records, one per txn")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    header("Store writes per second")
    n = args.records
    rows = []
    target_ok = None
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_url() if not args.no_postgres else contextlib.nullcontext() as pg,
    ):
        urls = [("SQLite", f"sqlite:///{Path(tmp) / 'one.db'}")]
        if pg is not None:
            urls.append(("PostgreSQL", pg))
        elif not args.no_postgres:
            print("(PostgreSQL not available: skipped)\n")
        for name, url in urls:
            store = open_store(url)
            base = calls_in(store)
            elapsed = write_batched(store, records(n, 0))
            rate = n / elapsed
            got = calls_in(store) - base
            rows.append([name, "1 process, batched (monitor path)", n, elapsed, rate, got == n])
            if name == "SQLite":
                target_ok = rate >= TARGET
            single = args.single
            elapsed = write_single(store, records(single, 99))
            got = calls_in(store) - base - n
            rows.append([name, "1 process, 1 txn per record", single, elapsed, single / elapsed,
                         got == single])  # fmt: skip
            store.close()
            multi_url = url if name == "PostgreSQL" else f"sqlite:///{Path(tmp) / 'multi.db'}"
            store = open_store(multi_url)
            base = calls_in(store)
            elapsed = write_processes(multi_url, n // args.procs, args.procs)
            total = (n // args.procs) * args.procs
            got = calls_in(store) - base
            rows.append([name, f"{args.procs} processes, batched", total, elapsed,
                         total / elapsed, got == total])  # fmt: skip
            store.close()
    print(table(["store", "how", "records", "seconds", "writes/s", "all stored"], rows))
    print()
    if target_ok is not None:
        rate = rows[0][4]
        print(f"{verdict(target_ok)}  SQLite, one process: {rate:,.0f} writes/s >= {TARGET:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
