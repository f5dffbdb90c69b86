"""Chaos: many processes call through the handler while both stores fail.

4 processes x 2 threads x 500 calls, each call observed by two handlers: one
writing to a shared SQLite file, one to a shared PostgreSQL database. While
the calls run, PostgreSQL is killed (``pg_ctl stop -m immediate``) and
started again 5 s later, and another process holds an exclusive lock on the
SQLite file for 10 s. Every model call must succeed; once the handlers are
closed each store holds exactly 4,000 calls (or, if records had to be
dropped, exactly as many fewer as ``seedlock.store_overflow`` reported);
every problem is a ``seedlock.store_error`` naming its operation, and no
event holds the database password. The worker processes write their events
as JSON lines (`configure_logging`), one file per process.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock._store import open_store
from tests._fixtures.postgres import PASSWORD, PostgresServer
from tests._fixtures.stub_openai import StubOpenAI

pytestmark = pytest.mark.postgres

PROCESSES = 4
THREADS = 2
CALLS = 500  # per thread
PROMPTS = 300  # distinct requests: a process's first call of each reads the store
PG_DOWN_S = 5.0
SQLITE_LOCK_S = 10.0
# The model answers in 30 ms until both outages are over, so the 500 calls of
# a thread (at least 15 s) outlast them even on a fast machine; then at once.
STUB_DELAY_S = 0.03
TOTAL = PROCESSES * THREADS * CALLS


def _worker(index: int, base_url: str, urls: list[str], log_path: str, out_path: str) -> None:
    """One application process: two handlers, ``THREADS`` threads of calls."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from langchain_seedlock import SeedLockCallbackHandler, configure_logging

    configure_logging(file=log_path, level="info")
    handlers = [SeedLockCallbackHandler(store=url) for url in urls]
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=base_url, api_key=SecretStr("sk-test"),
        seed=7, temperature=0, max_retries=0, timeout=30, callbacks=handlers,
    )  # fmt: skip
    failures: list[str] = []

    def calls(thread: int) -> None:
        for i in range(CALLS):
            try:
                model.invoke(f"question {(index + thread + i) % PROMPTS}")
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=calls, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closed = [h.close(timeout=60) for h in handlers]
    result = {
        "failures": failures,
        "closed": closed,
        "dropped": [h.monitor.dropped for h in handlers],
    }
    Path(out_path).write_text(json.dumps(result))


def _hold_sqlite_lock(path: str, seconds: float, locked: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def _events(log_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(log_dir.glob("events-*.jsonl")):
        text = path.read_text()
        assert PASSWORD not in text, f"the database password is in {path.name}"
        lines += [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines


def test_processes_threads_and_two_failing_stores(
    stub: StubOpenAI, postgres_server: PostgresServer, fresh_postgres_url: str, tmp_path: Path
) -> None:
    import psycopg

    started = time.monotonic()
    # The throwaway cluster commits asynchronously for speed; an immediate stop
    # would then lose commits already acknowledged. This database commits durably.
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        db = fresh_postgres_url.rsplit("/", 1)[1]
        conn.execute(f"ALTER DATABASE {db} SET synchronous_commit = on")
    sqlite_path = tmp_path / "chaos.db"
    sqlite_url = f"sqlite:///{sqlite_path}"
    urls = [sqlite_url, fresh_postgres_url]
    for url in urls:
        open_store(url).close()  # create the schemas once
    stub.delay = STUB_DELAY_S
    ctx = multiprocessing.get_context("spawn")
    logs = [str(tmp_path / f"events-{i}.jsonl") for i in range(PROCESSES)]
    outs = [str(tmp_path / f"result-{i}.json") for i in range(PROCESSES)]
    workers = [
        ctx.Process(target=_worker, args=(i, stub.base_url, urls, logs[i], outs[i]))
        for i in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    try:
        # Once calls flow: kill PostgreSQL and lock the SQLite file.
        deadline = time.monotonic() + 60
        while len(stub.requests) < 200:
            assert time.monotonic() < deadline, "the workers never started calling"
            assert all(w.is_alive() for w in workers), "a worker died"
            time.sleep(0.05)
        chaos_at = len(stub.requests)
        locked = ctx.Event()
        locker = ctx.Process(
            target=_hold_sqlite_lock, args=(str(sqlite_path), SQLITE_LOCK_S, locked)
        )
        locker.start()
        assert locked.wait(10)
        postgres_server.stop("immediate")
        try:
            time.sleep(PG_DOWN_S)
        finally:
            postgres_server.start()
        pg_back_at = len(stub.requests)
        locker.join(timeout=SQLITE_LOCK_S + 10)
        lock_released_at = len(stub.requests)
        stub.delay = 0.0
        for w in workers:
            w.join(timeout=120)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
    elapsed = time.monotonic() - started
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]

    results = [json.loads(Path(out).read_text()) for out in outs]
    events = _events(tmp_path)
    names = Counter(e["event"] for e in events)
    errors = [e for e in events if e["event"] == "seedlock.store_error"]
    overflow: Counter[str] = Counter()
    for e in events:
        if e["event"] == "seedlock.store_overflow":
            overflow[e["seedlock.store_url"]] += e["seedlock.dropped"]
    stored = {}
    for url in urls:
        with open_store(url) as s:
            stored[url] = sum(r.calls for r in s.requests(limit=10_000))
    by_op = Counter(
        (e["seedlock.store_url"].split(":")[0], e["seedlock.operation"]) for e in errors
    )
    print(
        f"\nchaos: {TOTAL} calls in {elapsed:.1f}s; calls made before the outages {chaos_at}, "
        f"while PostgreSQL was down {pg_back_at - chaos_at}, while the SQLite lock was held "
        f"{lock_released_at - chaos_at}; events {dict(names)}; store_error by store and "
        f"operation {dict(by_op)}; stored {list(stored.values())}; overflow {dict(overflow)}"
    )

    assert [r["failures"] for r in results] == [[]] * PROCESSES  # no model call failed
    assert lock_released_at < TOTAL, "the calls ended before the chaos did"
    for url in urls:
        assert stored[url] + overflow[url] == TOTAL
        assert overflow[url] == 0  # the buffer outlasted both outages
    assert all(r["closed"] == [True, True] for r in results)
    # Every problem is a store_error (or an overflow), naming its operation.
    assert set(names) <= {"seedlock.store_error", "seedlock.store_overflow"}
    assert {e["seedlock.operation"] for e in errors} <= {"read", "write"}
    assert all(e["error"] and e["seedlock.store_url"] for e in errors)
    assert any(e["seedlock.store_url"].startswith("postgresql://") for e in errors)
