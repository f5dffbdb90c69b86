"""The PostgreSQL store against a real throwaway cluster (tests/_fixtures/postgres.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import StoredEvent, open_store
from langchain_seedlock._store._writer import BackgroundWriter
from tests._fixtures.postgres import PASSWORD, PostgresServer, _free_port
from tests.unit_tests.test_store_memory_sqlite import check_exact, rec, run_processes

pytestmark = pytest.mark.postgres


def test_semantics_match_the_other_stores(fresh_postgres_url: str) -> None:
    with open_store(fresh_postgres_url) as s:
        s.write([rec(at=10), rec(at=30), rec(output_hash="o2", fp=None, at=40)],
                [StoredEvent("seedlock.output_drift", 5, {"explained": True})],
                capture_content=True)  # fmt: skip
        s.write([rec(at=5)])
        outs = s.outputs_for("r1")
        assert [(o.output_hash, o.count, o.first_seen, o.last_seen, o.output_text) for o in outs] \
            == [("o1", 3, 5, 30, "hello"), ("o2", 1, 40, 40, "hello")]  # fmt: skip
        fps = s.fingerprints_for("openai:gpt-4o-mini")
        assert [(f.system_fingerprint, f.count) for f in fps] == [("fp_a", 3), (None, 1)]
        (req,) = s.requests()
        assert (req.calls, req.distinct_outputs, req.distinct_backends) == (4, 2, 2)
        assert [e.fields for e in s.events(name="seedlock.output_drift")] == [{"explained": True}]
        assert s.prune(older_than=35) == 3  # o1, the event, fp_a (None is newest: kept)
        assert [f.system_fingerprint for f in s.fingerprints_for("openai:gpt-4o-mini")] == [None]


def test_prune_keep_last(fresh_postgres_url: str) -> None:
    with open_store(fresh_postgres_url) as s:
        s.write([rec(f"r{i}", at=i) for i in range(10)])
        assert s.prune(keep_last=2) == 8
        assert [r.request_hash for r in s.requests()] == ["r9", "r8"]


def test_8_processes_x_1000_writes_exact(fresh_postgres_url: str) -> None:
    open_store(fresh_postgres_url).close()
    elapsed = run_processes(fresh_postgres_url, 8, 1000)
    print(f"postgres: 8000 single-record writes from 8 processes in {elapsed:.2f}s")
    with open_store(fresh_postgres_url) as s:
        check_exact(s, 8, 1000)


async def test_200_concurrent_native_awrite(fresh_postgres_url: str) -> None:
    s: Any = open_store(fresh_postgres_url, max_size=8)
    try:
        await asyncio.gather(*(s.awrite([rec(output_hash=f"o{i % 2}")]) for i in range(200)))
        outs = await s.aoutputs_for("r1")
        assert sorted(o.count for o in outs) == [100, 100]
        assert [f.count for f in await s.afingerprints_for("openai:gpt-4o-mini")] == [200]
    finally:
        await s.aclose()


def test_first_use_by_many_workers_migrates_once(fresh_postgres_url: str) -> None:
    errors: list[BaseException] = []

    def open_and_write() -> None:
        try:
            with open_store(fresh_postgres_url) as s:
                s.write([rec()])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with open_store(fresh_postgres_url) as s:
        assert s.outputs_for("r1")[0].count == 8


def test_newer_schema_is_refused(fresh_postgres_url: str) -> None:
    import psycopg

    open_store(fresh_postgres_url).close()
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO seedlock_schema_version (version) VALUES (99)")
    with pytest.raises(StoreVersionError, match=r"schema version 99.*upgrade") as info:
        open_store(fresh_postgres_url)
    assert PASSWORD not in str(info.value)


def test_wrong_password_is_a_clear_error_without_the_secret(
    postgres_server: PostgresServer,
) -> None:
    bad = "Wr0ng-pa55word-xyz"
    url = f"postgresql://seedlock:{bad}@127.0.0.1:{postgres_server.port}/seedlock"
    with pytest.raises(StoreError, match="wrong user or password") as info:
        open_store(url)
    text = str(info.value) + repr(info.value)
    assert bad not in text
    assert "***" in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_unreachable_host_fails_within_bounded_time() -> None:
    url = f"postgres://u:Secret-unreach-77@127.0.0.1:{_free_port()}/db"
    start = time.monotonic()
    with pytest.raises(StoreError, match="connecting failed") as info:
        open_store(url, connect_timeout=2)
    assert time.monotonic() - start < 30
    assert "Secret-unreach-77" not in str(info.value)


def test_password_never_in_url_or_repr(postgres_url: str) -> None:
    with open_store(postgres_url + "?application_name=x") as s:
        assert PASSWORD not in s.url
        assert PASSWORD not in repr(s)
        assert PASSWORD not in str(s)
        assert s.url.startswith("postgresql://seedlock:***@127.0.0.1:")
        w = BackgroundWriter(s)
        assert PASSWORD not in repr(w)
        w.close()


def test_server_stopped_during_1000_writes_then_back(
    postgres_server: PostgresServer, fresh_postgres_url: str
) -> None:
    store = open_store(fresh_postgres_url, connect_timeout=2, statement_timeout=5)
    errors: list[BaseException] = []
    writer = BackgroundWriter(store, batch_size=20, max_backoff=0.5, on_error=errors.append)
    try:
        for i in range(400):
            writer.submit(rec(f"r{i % 7}", f"o{i % 3}"), [StoredEvent("e", float(i))])
        assert writer.flush(timeout=60)
        postgres_server.stop("fast")
        try:
            for i in range(400, 1000):
                assert writer.submit(rec(f"r{i % 7}", f"o{i % 3}"), [StoredEvent("e", float(i))])
            deadline = time.monotonic() + 60
            while not errors:  # the writer saw the outage
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            postgres_server.start()
        assert writer.flush(timeout=120)
        assert writer.dropped == 0
    finally:
        writer.close(timeout=30)
    assert all(isinstance(e, StoreError) for e in errors)
    assert all(PASSWORD not in str(e) for e in errors)
    with open_store(fresh_postgres_url) as s:
        assert sum(r.calls for r in s.requests()) == 1000
        for i in range(7):
            expected = sum(1 for j in range(1000) if j % 7 == i)
            assert sum(o.count for o in s.outputs_for(f"r{i}")) == expected
        assert len(s.events(limit=5000)) == 1000
    store.close()


def test_write_throughput_batched(
    fresh_postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(fresh_postgres_url) as s:
        records: list[CallRecord] = [rec(f"r{i}") for i in range(5000)]
        start = time.perf_counter()
        for k in range(0, 5000, 500):
            s.write(records[k : k + 500])
        elapsed = time.perf_counter() - start
        with capsys.disabled():
            print(f"\npostgres: 5000 records in batches of 500: {5000 / elapsed:.0f} records/s")
        assert sum(r.calls for r in s.requests(limit=10_000)) == 5000
