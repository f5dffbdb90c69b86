"""Retried writes count once: record and event ids, on the memory and SQLite stores.

The PostgreSQL side (a real lost COMMIT answer through a TCP proxy) is in
tests/integration_tests/test_store_postgres.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock._errors import StoreError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import BaselineStore, StoredEvent, open_store
from langchain_seedlock._store._writer import BackgroundWriter
from tests.unit_tests.test_store_memory_sqlite import rec


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaselineStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/b.db"
    with open_store(url) as s:
        yield s


def new_id() -> str:
    return uuid.uuid4().hex


def with_id(record: CallRecord) -> CallRecord:
    record.record_id = new_id()
    return record


def calls(store: BaselineStore) -> int:
    return sum(r.calls for r in store.requests(limit=10_000))


class AnswerLost:
    """A store whose first ``lost`` writes commit and then raise, as when the
    connection dies after COMMIT: the caller cannot tell the write happened."""

    def __init__(self, inner: BaselineStore, lost: int) -> None:
        self.inner = inner
        self.lost = lost
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        self.attempts += 1
        self.inner.write(records, events, capture_content=capture_content)
        if self.lost:
            self.lost -= 1
            raise StoreError("server closed the connection unexpectedly (after COMMIT)")


def test_writer_retry_after_a_lost_commit_answer_counts_once(store: BaselineStore) -> None:
    lossy = AnswerLost(store, lost=3)
    errors: list[BaseException] = []
    writer = BackgroundWriter(
        lossy,  # type: ignore[arg-type]
        batch_size=40, max_backoff=0.05, on_error=errors.append,
    )  # fmt: skip
    try:
        for i in range(200):
            writer.submit(rec(f"r{i % 4}", f"o{i % 2}"), [StoredEvent("e", float(i))])
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert len(errors) == 3
    assert lossy.attempts == 200 // 40 + 3
    assert calls(store) == 200
    for i in range(4):
        assert sum(o.count for o in store.outputs_for(f"r{i}")) == 50
    assert sum(f.count for f in store.fingerprints_for("openai:gpt-4o-mini")) == 200
    assert len(store.events(limit=1000)) == 200


def test_a_record_object_submitted_twice_counts_twice(store: BaselineStore) -> None:
    # Ids are per submission (the writer gives them), not per object.
    shared = rec()
    writer = BackgroundWriter(store, batch_size=3)
    try:
        for _ in range(10):
            writer.submit(shared)
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert calls(store) == 10
    assert shared.record_id is None  # the caller's object is left alone


def test_same_ids_count_once_until_acknowledged(store: BaselineStore) -> None:
    batch = [with_id(rec(at=1)), with_id(rec(at=2)), with_id(rec(output_hash="o2", at=3))]
    event = StoredEvent("seedlock.output_drift", 3, {"n": 1}, event_id=new_id())
    store.write(batch, [event])
    store.write(batch, [event])  # the retry of a write whose answer was lost
    store.write([*batch, batch[0]], [event, event])  # repeats inside one write too
    assert [(o.output_hash, o.count) for o in store.outputs_for("r1")] == [("o1", 2), ("o2", 1)]
    assert [f.count for f in store.fingerprints_for("openai:gpt-4o-mini")] == [3]
    assert len(store.events()) == 1
    # Records without ids are not deduplicated: each write counts.
    plain = rec(at=4)
    store.write([plain])
    store.write([plain])
    assert calls(store) == 5
    # Acknowledged: the caller will not retry, so the ids may be forgotten.
    store.acknowledge(batch)
    store.write([rec(at=5)])  # a SQL store forgets them in its next write
    store.write(batch)
    assert calls(store) == 9


def test_sqlite_awrite_timed_out_then_retried_counts_once(tmp_path: Path) -> None:
    """A timed-out ``awrite`` finishes in its thread anyway: the caller's retry,
    not knowing, writes the same records again."""
    path = tmp_path / "t.db"
    store = open_store(f"sqlite:///{path}")
    batch = [with_id(rec(f"r{i % 3}")) for i in range(30)]
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write waits for the lock...

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.awrite(batch), timeout=0.2)  # ...the caller gives up,
        blocker.execute("COMMIT")  # ...and the abandoned write commits in its thread
        deadline = time.monotonic() + 10
        while calls(store) == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await store.awrite(batch)  # the caller's retry

    asyncio.run(scenario())
    blocker.close()
    assert calls(store) == 30
    store.close()


def test_sqlite_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA)  # a file made by 0.1.0
    conn.execute("INSERT INTO outputs VALUES ('r1', 'b', 'o1', 'openai:m', 'fp', 5, 1, 2, NULL)")
    conn.execute("INSERT INTO events (name, at, fields) VALUES ('e', 1, '{}')")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with open_store(f"sqlite:///{path}") as s:
        s.write([with_id(rec())], [StoredEvent("e", 2, event_id=new_id())])
        assert [o.count for o in s.outputs_for("r1")] == [5, 1]
        assert [e.at for e in s.events()] == [1, 2]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(5,)]
    conn.close()
    with open_store(f"sqlite:///{path}", read_only=True) as s:
        assert len(s.events()) == 2


# Version 2 as 0.2 made it: version 1 plus the record ids and event ids.
V2_ADDITIONS = """
CREATE TABLE record_ids (record_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
ALTER TABLE events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX events_event_id ON events (event_id);
"""


def test_sqlite_version_2_file_is_migrated_in_place_with_a_sketch_key(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA + V2_ADDITIONS)
    conn.execute("INSERT INTO outputs VALUES ('r1', 'b', 'o1', 'openai:m', 'fp', 5, 1, 2, NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    # Read-only, it stays version 2: rows read back without a sketch.
    with open_store(f"sqlite:///{path}", read_only=True) as s:
        assert [o.sketch for o in s.outputs_for("r1")] == [None]
        assert s.sketch_key() is None
    with open_store(f"sqlite:///{path}") as s:
        key = s.sketch_key()
        assert key is not None
        assert len(key) == 32
        s.write([with_id(rec(output_hash="o2", text="a new answer"))])
        rows = {o.output_hash: o for o in s.outputs_for("r1")}
        assert rows["o1"].count == 5
        assert rows["o1"].sketch is None
        assert rows["o2"].sketch is not None
        assert rows["o2"].output_text is None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(5,)]
    assert conn.execute("SELECT value FROM meta").fetchall() == [(key,)]  # one key, kept
    conn.close()
    with open_store(f"sqlite:///{path}") as s:
        assert s.sketch_key() == key


def test_sqlite_writer_keeps_the_id_table_small(tmp_path: Path) -> None:
    path = tmp_path / "ids.db"
    store = open_store(f"sqlite:///{path}")
    writer = BackgroundWriter(store, batch_size=25)
    try:
        for i in range(500):
            writer.submit(rec(f"r{i % 3}"))
            if i % 25 == 24:
                assert writer.flush(timeout=30)
    finally:
        writer.close()
    conn = sqlite3.connect(path)
    assert 0 < conn.execute("SELECT count(*) FROM record_ids").fetchone()[0] <= 25
    assert calls(store) == 500
    store.prune(older_than=time.time() + 1)  # ids never acknowledged go with the rest
    assert conn.execute("SELECT count(*) FROM record_ids").fetchone()[0] == 0
    conn.close()
    store.close()


# The schema 0.1.0 created (version 1), verbatim: what an existing file holds.
V1_SCHEMA = """
CREATE TABLE outputs (
    request_hash TEXT NOT NULL, backend_id TEXT NOT NULL, output_hash TEXT NOT NULL,
    model_key TEXT NOT NULL, system_fingerprint TEXT, count INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, output_text TEXT,
    PRIMARY KEY (request_hash, backend_id, output_hash)
);
CREATE INDEX outputs_last_seen ON outputs (last_seen);
CREATE INDEX outputs_model_key ON outputs (model_key);
CREATE TABLE fingerprints (
    model_key TEXT NOT NULL, fingerprint_key TEXT NOT NULL, system_fingerprint TEXT,
    count INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (model_key, fingerprint_key)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, at REAL NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
"""
