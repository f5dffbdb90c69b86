"""The SQL stores' one schema source (`_store/_schema.py`) against real databases.

A new SQLite store and a new PostgreSQL store, and stores migrated from
version 1 as 0.1.0 wrote it (verbatim DDL), are read back from the
databases' own catalogs and compared with the schema source: table and
column names, each column's type family, NOT NULL, primary keys, indexes.
So the two dialects cannot drift apart, and a migration step cannot leave a
store different from a new one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock._store import open_store
from langchain_seedlock._store._schema import (
    POSTGRES,
    SCHEMA_VERSION,
    SQLITE,
    TABLES,
    Dialect,
    Queries,
    migration,
)
from tests.integration_tests.test_store_postgres import V1_SCHEMA as PG_V1
from tests.unit_tests.test_store_retries import V1_SCHEMA as SQLITE_V1

# What each type family must be in each database, written down here apart
# from `Dialect.types`: SQLite's declared type, PostgreSQL's catalog name.
SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "count": "INTEGER", "time": "REAL",
                "bytes": "BLOB", "json": "TEXT", "serial": "INTEGER"}  # fmt: skip
PG_TYPES = {"text": "text", "int": "integer", "count": "bigint", "time": "double precision",
            "bytes": "bytea", "json": "jsonb", "serial": "bigint"}  # fmt: skip

# table -> (columns as (name, type, not null), primary key, {index: (unique, columns)})
Shape = dict[str, tuple[list[tuple[str, str, bool]], tuple[str, ...], dict[str, Any]]]


def expected(types: dict[str, str]) -> Shape:
    """The schema source's tables, in one database's type names."""
    return {
        t.name: (
            [(c.name, types[c.family], not c.null) for c in t.columns],
            t.key,
            {i.name: (i.unique, i.columns) for i in t.indexes},
        )
        for t in TABLES
    }


def sqlite_shape(path: Path) -> Shape:
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != "sqlite_sequence"  # SQLite's own, for AUTOINCREMENT
        ]
        shape: Shape = {}
        for table in names:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            # A key column counts as NOT NULL, as it does in PostgreSQL.
            columns = [(name, kind, bool(notnull or pk)) for _, name, kind, notnull, _, pk in info]
            key = tuple(name for pk, name in sorted((r[5], r[1]) for r in info) if pk)
            indexes = {}
            for _, index, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                if origin == "c":  # made by CREATE INDEX (not a key's own index)
                    cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})"))
                    indexes[index] = (bool(unique), cols)
            shape[table] = (columns, key, indexes)
        return shape
    finally:
        conn.close()


def pg_shape(url: str) -> Shape:
    import psycopg

    def bare(name: str) -> str:
        assert name.startswith(POSTGRES.prefix), name
        return name[len(POSTGRES.prefix) :]

    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'NO' "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        indexes = conn.execute(
            "SELECT t.relname, i.relname, ix.indisprimary, ix.indisunique, "
            "       array_agg(a.attname::text ORDER BY k.ord) "
            "FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid "
            "JOIN pg_class t ON t.oid = ix.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public' "
            "CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "GROUP BY 1, 2, 3, 4"
        ).fetchall()
    shape: Shape = {}
    for table, column, kind, notnull in cols:
        shape.setdefault(bare(table), ([], (), {}))[0].append((column, kind, notnull))
    for table, index, primary, unique, columns in indexes:
        columns_, _, found = shape[bare(table)]
        if primary:
            shape[bare(table)] = (columns_, tuple(columns), found)
        else:
            found[bare(index)] = (unique, tuple(columns))
    return shape


def test_types_cover_every_column() -> None:
    families = {c.family for t in TABLES for c in t.columns}
    for d in (SQLITE, POSTGRES):
        assert families == set(d.types)
    assert families == set(SQLITE_TYPES) == set(PG_TYPES)


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRES], ids=lambda d: d.name)
def test_every_table_is_made_once_and_every_column_added_once(dialect: Dialect) -> None:
    steps = [s for v in range(1, SCHEMA_VERSION + 1) for s in migration(dialect, v)]
    creates = [s for s in steps if s.startswith("CREATE TABLE")]
    assert len(creates) == len(TABLES)
    adds = [s for s in steps if s.startswith("ALTER TABLE")]
    assert len(adds) == sum(1 for t in TABLES for c in t.columns if c.added)
    assert migration(dialect, SCHEMA_VERSION + 1) == []


@pytest.mark.parametrize("old", [False, True], ids=["new", "from-v1"])
def test_sqlite_store_has_the_schema(tmp_path: Path, old: bool) -> None:
    path = tmp_path / "s.db"
    if old:  # a file made by 0.1.0
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(SQLITE_V1 + "PRAGMA user_version = 1;")
        conn.close()
    open_store(f"sqlite:///{path}").close()
    assert sqlite_shape(path) == expected(SQLITE_TYPES)
    conn = sqlite3.connect(path)
    sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    conn.close()
    # As versions 2 and 3 made them (a rowid table is another storage format).
    compact = {name for name, text in sql.items() if text.endswith("WITHOUT ROWID")}
    assert compact == {t.name for t in TABLES if t.compact} == {"record_ids", "meta"}
    assert "AUTOINCREMENT" in sql["events"]  # event ids are never reused


@pytest.mark.postgres
@pytest.mark.parametrize("old", [False, True], ids=["new", "from-v1"])
def test_postgres_store_has_the_schema(fresh_postgres_url: str, tmp_path: Path, old: bool) -> None:
    import psycopg

    if old:  # a database made by 0.1.0
        with psycopg.connect(fresh_postgres_url) as conn:
            conn.execute(PG_V1)
            conn.execute("CREATE TABLE seedlock_schema_version (version INT NOT NULL)")
            conn.execute("INSERT INTO seedlock_schema_version VALUES (1)")
    open_store(fresh_postgres_url).close()
    pg = pg_shape(fresh_postgres_url)
    assert pg == expected(PG_TYPES)
    with psycopg.connect(fresh_postgres_url) as conn:
        collation = conn.execute(
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_name = 'seedlock_record_ids' AND column_name = 'record_id'"
        ).fetchone()
    assert collation == ("C",)  # ids compared byte by byte, as in SQLite

    # The same tables and columns, in the same order, as a SQLite store.
    path = tmp_path / "s.db"
    open_store(f"sqlite:///{path}").close()
    sqlite = sqlite_shape(path)
    assert sorted(sqlite) == sorted(pg)
    for table, (columns, key, indexes) in sqlite.items():
        pg_columns, pg_key, pg_indexes = pg[table]
        assert [c[0] for c in columns] == [c[0] for c in pg_columns], table
        assert (key, indexes) == (pg_key, pg_indexes), table


def test_an_old_read_only_sqlite_store_reads_what_it_lacks_as_null() -> None:
    q = Queries(SQLITE, 2)
    assert "NULL FROM outputs" in q.outputs
    assert "NULL FROM fingerprints" in " ".join(q.fingerprints.split())
    assert (q.has_inflight, q.has_payloads) == (False, False)
    new = Queries(SQLITE)
    assert "sketch FROM outputs" in new.outputs
    assert (new.has_inflight, new.has_payloads) == (True, True)
