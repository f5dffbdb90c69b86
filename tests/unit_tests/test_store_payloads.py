"""Recorded request payloads in the memory and SQLite stores: one per request
hash, only with capture_content, pruned with their request, and the in-place
migration of a version 4 SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import open_store
from langchain_seedlock._store._base import BaselineStore
from tests.unit_tests.test_store_memory_sqlite import rec


def with_payload(r: CallRecord, payload: str) -> CallRecord:
    return dataclasses.replace(r, request_payload=payload)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaselineStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/p.db"
    with open_store(url) as s:
        yield s


def test_one_payload_per_request_first_kept(store: BaselineStore) -> None:
    store.write(
        [with_payload(rec("r1", at=1.0), '{"a": 1}'), with_payload(rec("r1", at=2.0), '{"a": 2}')],
        capture_content=True,
    )
    store.write([with_payload(rec("r2", at=3.0), '{"b": 1}')], capture_content=True)
    store.write([with_payload(rec("r1", at=4.0), '{"a": 3}')], capture_content=True)
    assert store.payload_hashes() == ["r1", "r2"]
    assert store.request_payload("r1") == '{"a": 1}'
    assert store.request_payload("r2") == '{"b": 1}'
    assert store.request_payload("r3") is None


def test_no_payload_without_capture_content(store: BaselineStore) -> None:
    store.write([with_payload(rec("r1"), '{"a": 1}')])  # capture_content=False
    assert store.payload_hashes() == []
    assert store.request_payload("r1") is None
    assert [o.count for o in store.outputs_for("r1")] == [1]


def test_prune_takes_the_payload_with_its_request(store: BaselineStore) -> None:
    store.write(
        [with_payload(rec("old", at=10.0), "{}"), with_payload(rec("new", at=100.0), "{}")],
        capture_content=True,
    )
    assert store.prune(older_than=50.0) == 2  # the old output and its payload
    assert store.payload_hashes() == ["new"]


def test_sqlite_version_4_file_is_migrated_to_5(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with open_store(f"sqlite:///{path}") as s:
        s.write([rec("r1")])
    conn = sqlite3.connect(path, isolation_level=None)  # back to the version 4 layout
    conn.execute("DROP TABLE payloads")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version VALUES (4)")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with open_store(f"sqlite:///{path}", read_only=True) as s:  # read-only: stays 4
        assert s.payload_hashes() == []
        assert s.request_payload("r1") is None
    with open_store(f"sqlite:///{path}") as s:
        assert [o.count for o in s.outputs_for("r1")] == [1]
        s.write([with_payload(rec("r1"), '{"m": 1}')], capture_content=True)
        assert s.request_payload("r1") == '{"m": 1}'
        assert [o.count for o in s.outputs_for("r1")] == [2]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 5
    conn.close()
