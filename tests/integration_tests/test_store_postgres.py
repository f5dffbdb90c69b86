"""The PostgreSQL store against a real throwaway cluster (tests/_fixtures/postgres.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._sketch import Sketcher
from langchain_seedlock._store import StoredEvent, open_store
from langchain_seedlock._store._writer import BackgroundWriter
from tests._fixtures.postgres import PASSWORD, CommitCutProxy, PostgresServer, _free_port
from tests._fixtures.stub_openai import StubOpenAI
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


def test_unreachable_host_opens_then_fails_on_use_within_bounded_time() -> None:
    url = f"postgres://u:Secret-unreach-77@127.0.0.1:{_free_port()}/db"
    start = time.monotonic()
    store = open_store(url, connect_timeout=2)  # a server that is down is no error at open
    assert time.monotonic() - start < 5
    with pytest.raises(StoreError, match="connecting failed") as info:
        store.outputs_for("r1")
    assert time.monotonic() - start < 30
    assert "Secret-unreach-77" not in str(info.value)
    store.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://u:Secret-bad-url-3@[::1/db", r"connecting failed: invalid URL: .*IPv6"),
        ("postgresql://u:Secret-bad-url-3@127.0.0.1:notaport/db", r"port 'notaport'"),
        ("postgresql://u:Secret-bad-url-3@h/db?bogus=1", r"invalid URI query parameter"),
    ],
)
def test_malformed_url_fails_fast_without_connecting(url: str, match: str) -> None:
    from langchain_seedlock import SeedLockCallbackHandler

    for connect in (True, False):
        start = time.monotonic()
        with pytest.raises(StoreError, match=match) as info:
            open_store(url, connect=connect)
        assert time.monotonic() - start < 1
        assert "Secret-bad-url-3" not in str(info.value)
    with pytest.raises(StoreError, match=match):
        SeedLockCallbackHandler(store=url)  # an application with a typo does not boot


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


# -- lost commit answers, old stores, booting while the server is down --------------
def _record_ids(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM seedlock_record_ids").fetchone()
        return int(row[0]) if row else -1


@pytest.mark.parametrize("cuts", [1, 2], ids=["retried-by-the-store", "retried-by-the-writer"])
def test_lost_commit_answer_is_not_counted_twice(
    postgres_server: PostgresServer, fresh_postgres_url: str, cuts: int
) -> None:
    """The connection dies right after the server committed a batch: the retry
    (the store's own on a fresh connection, then the writer's) counts nothing twice."""
    proxy = CommitCutProxy(postgres_server.port)
    store = open_store(proxy.url(fresh_postgres_url), connect_timeout=2)
    errors: list[BaseException] = []
    writer = BackgroundWriter(store, batch_size=1000, max_backoff=0.2, on_error=errors.append)
    try:
        proxy.cuts = cuts
        for i in range(300):
            assert writer.submit(rec(f"r{i % 7}", f"o{i % 3}"), [StoredEvent("e", float(i))])
        assert writer.flush(timeout=60)
        assert proxy.cut == cuts  # the answers were really lost
        assert writer.dropped == 0
    finally:
        writer.close(timeout=30)
        store.close()
        proxy.close()
    with open_store(fresh_postgres_url) as s:
        assert sum(r.calls for r in s.requests()) == 300
        for i in range(7):
            expected = sum(1 for j in range(300) if j % 7 == i)
            assert sum(o.count for o in s.outputs_for(f"r{i}")) == expected
        assert sum(f.count for f in s.fingerprints_for("openai:gpt-4o-mini")) == 300
        assert len(s.events(limit=1000)) == 300
    # The store retries once on a new connection; the second lost answer reaches the writer.
    assert len(errors) == cuts - 1
    assert all(PASSWORD not in str(e) and "writing failed" in str(e) for e in errors)
    # Acknowledged batches leave no ids behind (the last one waits for the next write).
    assert _record_ids(fresh_postgres_url) <= 300


def test_writer_keeps_the_id_table_small(fresh_postgres_url: str) -> None:
    store = open_store(fresh_postgres_url)
    writer = BackgroundWriter(store, batch_size=50)
    try:
        for i in range(500):
            writer.submit(rec(f"r{i % 3}"))
            if i % 50 == 49:
                assert writer.flush(timeout=30)
    finally:
        writer.close(timeout=30)
        store.close()
    assert 0 < _record_ids(fresh_postgres_url) <= 50  # the last batch's, until a next write
    with open_store(fresh_postgres_url) as s:
        assert sum(r.calls for r in s.requests()) == 500
        s.prune(older_than=time.time() + 1)  # ids never acknowledged go with the rest
    assert _record_ids(fresh_postgres_url) == 0


def test_a_version_1_store_is_migrated_in_place(fresh_postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(fresh_postgres_url) as conn:  # a store made by 0.1.0
        conn.execute(V1_SCHEMA)
        conn.execute("CREATE TABLE seedlock_schema_version (version INT NOT NULL)")
        conn.execute("INSERT INTO seedlock_schema_version VALUES (1)")
        conn.execute(
            "INSERT INTO seedlock_outputs VALUES ('r1', 'b', 'o1', 'openai:gpt-4o-mini', "
            "'fp_a', 5, 1, 2, NULL)"
        )
        conn.execute("INSERT INTO seedlock_events (name, at, fields) VALUES ('e', 1, '{}')")
    store = open_store(fresh_postgres_url)
    writer = BackgroundWriter(store)
    try:
        writer.submit(rec(output_hash="o1"), [StoredEvent("e", 2.0)])
        assert writer.flush(timeout=30)
    finally:
        writer.close()
        store.close()
    with psycopg.connect(fresh_postgres_url) as conn:
        versions = conn.execute("SELECT version FROM seedlock_schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,), (3,), (4,), (5,)]
    with open_store(fresh_postgres_url) as s:
        assert [o.count for o in s.outputs_for("r1") if o.output_hash == "o1"] == [5, 1]
        assert [e.at for e in s.events()] == [1.0, 2.0]


# What version 2 added to version 1, verbatim.
V2_ADDITIONS = """
CREATE TABLE seedlock_record_ids (record_id TEXT COLLATE "C" PRIMARY KEY,
                                  at DOUBLE PRECISION NOT NULL);
ALTER TABLE seedlock_events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX seedlock_events_event_id ON seedlock_events (event_id);
"""


def test_a_version_2_store_gets_sketches_and_one_key(fresh_postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(fresh_postgres_url) as conn:  # a store made by 0.2
        conn.execute(V1_SCHEMA)
        conn.execute(V2_ADDITIONS)
        conn.execute("CREATE TABLE seedlock_schema_version (version INT NOT NULL)")
        conn.execute("INSERT INTO seedlock_schema_version VALUES (1), (2)")
        conn.execute(
            "INSERT INTO seedlock_outputs VALUES ('r1', 'b', 'o1', 'openai:gpt-4o-mini', "
            "'fp_a', 5, 1, 2, NULL)"
        )
    stores = [open_store(fresh_postgres_url) for _ in range(2)]  # two workers
    try:
        keys = {s.sketch_key() for s in stores}
        stores[0].write([rec(output_hash="o2", text="a new answer")])
    finally:
        for s in stores:
            s.close()
    (key,) = keys
    assert key is not None
    assert len(key) == 32
    with psycopg.connect(fresh_postgres_url) as conn:
        versions = conn.execute("SELECT version FROM seedlock_schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,), (3,), (4,), (5,)]
        assert conn.execute("SELECT value FROM seedlock_meta").fetchall() == [(key,)]
    with open_store(fresh_postgres_url) as s:
        rows = {o.output_hash: o for o in s.outputs_for("r1")}
        assert rows["o1"].count == 5
        assert rows["o1"].sketch is None
        assert rows["o2"].output_text is None
        assert rows["o2"].sketch == Sketcher(key).sketch("a new answer")
        assert s.sketch_key() == key


async def test_async_write_stores_sketches(fresh_postgres_url: str) -> None:
    with open_store(fresh_postgres_url) as s:
        await s.awrite([rec(output_hash="o3", text="written from asyncio")])
        key = s.sketch_key()
        assert key is not None
        (row,) = s.outputs_for("r1")
        assert row.sketch == Sketcher(key).sketch("written from asyncio")


# The schema 0.1.0 created (version 1), verbatim: what an existing store holds.
V1_SCHEMA = """
CREATE TABLE seedlock_outputs (
    request_hash TEXT NOT NULL, backend_id TEXT NOT NULL, output_hash TEXT NOT NULL,
    model_key TEXT NOT NULL, system_fingerprint TEXT, count BIGINT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
    output_text TEXT, PRIMARY KEY (request_hash, backend_id, output_hash)
);
CREATE INDEX seedlock_outputs_last_seen ON seedlock_outputs (last_seen);
CREATE INDEX seedlock_outputs_model_key ON seedlock_outputs (model_key);
CREATE TABLE seedlock_fingerprints (
    model_key TEXT NOT NULL, fingerprint_key TEXT NOT NULL, system_fingerprint TEXT,
    count BIGINT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL, PRIMARY KEY (model_key, fingerprint_key)
);
CREATE TABLE seedlock_events (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    fields JSONB NOT NULL
);
CREATE INDEX seedlock_events_at ON seedlock_events (at);
"""

# How long the server stays down after the handler is built: three times the
# writer's longest backoff (5 s), so the writer has settled into its capped
# retries, and past the 1 + 2 + 4 + 8 s reconnection schedule of psycopg's pool.
BOOT_OUTAGE_S = 15.0


def test_handler_boots_while_the_server_is_down_and_stores_every_call_later(
    stub: StubOpenAI, postgres_server: PostgresServer, fresh_postgres_url: str
) -> None:
    from langchain_openai import ChatOpenAI

    from langchain_seedlock import SeedLockCallbackHandler

    postgres_server.stop("fast")
    try:
        with capture_logs() as logs:
            built = time.monotonic()
            handler = SeedLockCallbackHandler(store=fresh_postgres_url)  # nothing listens
            assert time.monotonic() - built < 2
            model = ChatOpenAI(
                model="gpt-4o-mini", base_url=stub.base_url, api_key=SecretStr("sk-test"),
                seed=7, temperature=0, max_retries=0, callbacks=[handler],
            )  # fmt: skip
            calls = 0
            while time.monotonic() - built < BOOT_OUTAGE_S:
                assert model.invoke(f"question {calls % 5}").text  # never fails
                calls += 1
                time.sleep(0.1)
            assert handler.monitor.flush(timeout=0.5) is False  # nothing could be stored
            postgres_server.start()
            back = time.monotonic()
            # No flush (it would wake the writer): the writer finds the server by itself.
            with open_store(fresh_postgres_url) as s:
                while sum(r.calls for r in s.requests()) < calls:
                    assert time.monotonic() - back < 30, "the writer never came back"
                    time.sleep(0.2)
            recovered = time.monotonic() - back
            assert handler.close()
    finally:
        with contextlib.suppress(Exception):  # already running when the test got that far
            postgres_server.start()
    print(f"\nboot while down: {calls} calls in {BOOT_OUTAGE_S:g}s, stored {recovered:.1f}s after")
    assert handler.monitor.dropped == 0
    assert recovered < 12  # the writer's capped backoff (5 s), plus margin for a loaded machine
    with open_store(fresh_postgres_url) as s:
        assert sum(r.calls for r in s.requests()) == calls
    errors = [e for e in logs if e["event"] == "seedlock.store_error"]
    assert {e["seedlock.operation"] for e in errors} >= {"write"}
    assert all("connecting failed" in e["error"] for e in errors)
    assert PASSWORD not in json.dumps(logs, default=repr)
    assert not [e for e in logs if e["event"] == "seedlock.store_overflow"]


def test_backends_aggregate_in_sql_over_100k_calls(fresh_postgres_url: str) -> None:
    """The report's per-backend figures come from one SQL query returning one row
    per (model, backend): the same numbers as the definition, over 100,000 calls."""
    from tests.unit_tests.test_store_memory_sqlite import (
        _random_calls,
        expected_backends,
        summarized,
    )

    calls = _random_calls(100_000, seed=11)
    with open_store(fresh_postgres_url) as s:
        for i in range(0, len(calls), 5000):
            s.write(calls[i : i + 5000])
        assert len(s.backends()) == 4  # 2 models x 2 fingerprints: one row each
        assert summarized(s) == expected_backends(calls)


# What version 3 added to version 2, verbatim.
V3_ADDITIONS = """
ALTER TABLE seedlock_outputs ADD COLUMN sketch BYTEA;
CREATE TABLE seedlock_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""


def test_a_version_3_store_gets_identities_and_in_flight_counts(fresh_postgres_url: str) -> None:
    import psycopg

    from langchain_seedlock._drift import DriftMonitor
    from langchain_seedlock._events import BACKEND_CHANGED
    from langchain_seedlock._identity import BackendIdentity
    from langchain_seedlock.testing import capture_seedlock_events, events_named

    with psycopg.connect(fresh_postgres_url) as conn:  # a store made by 0.3
        conn.execute(V1_SCHEMA)
        conn.execute(V2_ADDITIONS)
        conn.execute(V3_ADDITIONS)
        conn.execute("CREATE TABLE seedlock_schema_version (version INT NOT NULL)")
        conn.execute("INSERT INTO seedlock_schema_version VALUES (1), (2), (3)")
        conn.execute(
            "INSERT INTO seedlock_outputs VALUES ('r1', 'b', 'o1', 'openai:gpt-4o-mini', "
            "'fp_a', 5, 1, 2, NULL, NULL)"
        )
        conn.execute(
            "INSERT INTO seedlock_fingerprints VALUES ('openai:gpt-4o-mini', 's:fp_a', 'fp_a', "
            "5, 1, 2)"
        )

    def call(output: str, kv: str, in_flight: int) -> CallRecord:
        return CallRecord(
            provider="openai", request_model="gpt-4o-mini", request_hash="r1",
            output_hash=output, seed=1, system_fingerprint="fp_a",
            declared=(("kv_cache", kv),), in_flight=in_flight,
        )  # fmt: skip

    with open_store(fresh_postgres_url) as store:
        assert store.fingerprints_for("openai:gpt-4o-mini")[0].identity is None  # old row
        monitor = DriftMonitor(store, buffer_size=0)
        monitor.observe(call("o2", "f16", 1))
        monitor.observe(call("o2", "f16", 3))
        monitor.close()
    with open_store(fresh_postgres_url) as store:  # another worker, after a restart
        monitor = DriftMonitor(store, buffer_size=0)
        with capture_seedlock_events() as events:
            monitor.observe(call("o3", "q8_0", 20))
        monitor.close()
        (changed,) = events_named(events, BACKEND_CHANGED)
        assert changed["seedlock.changed_fields"] == {"kv_cache": ["f16", "q8_0"]}
        (fp,) = store.fingerprints_for("openai:gpt-4o-mini")
        assert fp.count == 8
        assert fp.identity is not None
        assert BackendIdentity.from_json(fp.identity).declared == (("kv_cache", "q8_0"),)
        rows = [(r.bucket, r.calls, r.repeat_calls, r.known_repeats) for r in store.in_flight()]
        assert rows == [("1", 1, 0, 0), ("2-4", 1, 1, 1), (">16", 1, 0, 0)]
        assert [o.count for o in store.outputs_for("r1") if o.output_hash == "o1"] == [5]
    with psycopg.connect(fresh_postgres_url) as conn:
        versions = conn.execute("SELECT version FROM seedlock_schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,), (3,), (4,), (5,)]


# What version 4 added to version 3, verbatim.
V4_ADDITIONS = """
ALTER TABLE seedlock_fingerprints ADD COLUMN IF NOT EXISTS identity TEXT;
CREATE TABLE IF NOT EXISTS seedlock_inflight (
    model_key TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    bucket TEXT NOT NULL,
    lowest INTEGER NOT NULL,
    calls BIGINT NOT NULL,
    repeat_calls BIGINT NOT NULL,
    known_repeats BIGINT NOT NULL,
    PRIMARY KEY (model_key, backend_id, bucket)
);
"""


async def test_a_version_4_store_gets_payloads_sync_and_async(fresh_postgres_url: str) -> None:
    import dataclasses

    import psycopg

    with psycopg.connect(fresh_postgres_url) as conn:  # a store made by 0.4
        for script in (V1_SCHEMA, V2_ADDITIONS, V3_ADDITIONS, V4_ADDITIONS):
            conn.execute(script)
        conn.execute("CREATE TABLE seedlock_schema_version (version INT NOT NULL)")
        conn.execute("INSERT INTO seedlock_schema_version VALUES (1), (2), (3), (4)")
        conn.execute(
            "INSERT INTO seedlock_outputs VALUES ('r1', 'b', 'o1', 'openai:gpt-4o-mini', "
            "'fp_a', 5, 1, 2, NULL, NULL)"
        )
    payload = json.dumps({"messages": [{"type": "human", "data": {"content": "hé ✓"}}]})
    with open_store(fresh_postgres_url) as store:
        assert store.payload_hashes() == []
        store.write([dataclasses.replace(rec("r1"), request_payload=payload)])  # capture off
        assert store.request_payload("r1") is None
        store.write([dataclasses.replace(rec("r1"), request_payload=payload)], capture_content=True)
        store.write(
            [dataclasses.replace(rec("r1"), request_payload='{"later": 1}')], capture_content=True
        )
        await store.awrite(
            [dataclasses.replace(rec("r2"), request_payload='{"async": 1}')], capture_content=True
        )
        assert store.payload_hashes() == ["r1", "r2"]
        assert store.request_payload("r1") == payload  # the first kept, byte for byte
        assert store.request_payload("r2") == '{"async": 1}'
        assert sorted(o.count for o in store.outputs_for("r1")) == [3, 5]  # old row kept
        store.prune(keep_last=1)
        assert store.payload_hashes() == ["r2"]  # the pruned request's payload went too
    with psycopg.connect(fresh_postgres_url) as conn:
        versions = conn.execute("SELECT version FROM seedlock_schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,), (3,), (4,), (5,)]


def test_verify_recorded_on_postgres(
    fresh_postgres_url: str, stub: StubOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chain recorded into PostgreSQL with capture on, re-sent by
    ``seedlock verify --recorded``; the payload rows hold no secret."""
    from langchain_seedlock.cli import main
    from tests.unit_tests.test_verify_recorded import _record

    _record(stub, fresh_postgres_url)
    with open_store(fresh_postgres_url) as store:
        payloads = [store.request_payload(h) or "" for h in store.payload_hashes()]
    assert len(payloads) == 2
    assert not any("sk-secret-key" in p or "header-secret" in p for p in payloads)
    assert PASSWORD not in "".join(payloads)
    verify = ["verify", "--recorded", "--base-url", stub.base_url, "--store", fresh_postgres_url]
    assert main(verify) == 0
    assert capsys.readouterr().out.count("OK") == 2
    stub.reply = "drifted"
    assert main(verify) == 3
    assert PASSWORD not in capsys.readouterr().out
