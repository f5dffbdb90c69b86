"""The one schema of the SQL stores, and their shared queries, rendered per dialect.

Every table (columns, key, indexes) is written here once, each table and
each column added later carrying the schema version that added it: the DDL
of each migration step is derived from that, so a store of any version
migrates to `SCHEMA_VERSION` and a new store is made by the same steps.
`SQLITE` and `POSTGRES` say how each dialect spells it: table prefix,
placeholder, types, ``WITHOUT ROWID``, ``ADD COLUMN IF NOT EXISTS``, casts.

`Queries` renders the statements both stores run. What truly differs by
dialect stays in the store's module: the version bookkeeping, batching the
record ids (PostgreSQL sends them as one array, SQLite one row at a time),
reading JSON event fields (``json_extract`` on TEXT vs ``->`` on JSONB).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from langchain_seedlock import _events as ev

SCHEMA_VERSION: Final = 5
SKETCH_KEY_NAME: Final = "sketch_key"
"""The `meta` row holding the store's sketch key (`BaselineStore.sketch_key`)."""

# Fingerprints may be None; a NULL in a unique key never conflicts in SQL, so
# the key column holds a tagged string and the nullable column the real value.
_NULL_FP: Final = "n:"


def fingerprint_key(fp: str | None) -> str:
    """The non-null ``fingerprint_key`` column for a possibly-None fingerprint."""
    return _NULL_FP if fp is None else "s:" + fp


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL dialect spells the schema and the queries."""

    name: str
    prefix: str
    """Of every table and index (PostgreSQL's share the application's database)."""
    p: str
    """The parameter placeholder."""
    types: Mapping[str, str]
    """The SQL type of each type family of `Column`."""
    autoincrement: str
    """After ``PRIMARY KEY`` of a ``serial`` column."""
    compact: str
    """After a `Table` marked compact (SQLite stores it without a rowid)."""
    bytewise: str
    """The collation of a key compared byte by byte (SQLite's default already is)."""
    add_column: str
    text: str
    """The cast a text parameter needs where it may be NULL (PostgreSQL infers no type)."""
    real: str
    """The same for a float parameter."""
    bigint: str
    """The cast of a sum of integers back to an integer (PostgreSQL's is numeric)."""
    least: str
    greatest: str
    bucket: str
    """``floor({x} / width)`` as an integer, the width a parameter (`Queries.rate_buckets`)."""


# SQLite files whose versions 4 and 5 came from earlier releases declare the
# in-flight counts BIGINT and the payloads' first_seen DOUBLE PRECISION: the
# same type affinity (INTEGER, REAL) as here, so old and new files store alike.
SQLITE: Final = Dialect(
    name="sqlite",
    prefix="",
    p="?",
    types={"text": "TEXT", "int": "INTEGER", "count": "INTEGER", "time": "REAL",
           "bytes": "BLOB", "json": "TEXT", "serial": "INTEGER"},
    autoincrement=" AUTOINCREMENT",  # ids are never reused, even after a prune
    compact=" WITHOUT ROWID",
    bytewise="",
    add_column="ADD COLUMN",  # SQLite has no IF NOT EXISTS here: the version guards it
    text="",
    real="",
    bigint="",
    least="min",
    greatest="max",
    # Epoch seconds are positive: CAST truncates, which is floor here.
    bucket="CAST({x} / ? AS INTEGER)",
)  # fmt: skip
POSTGRES: Final = Dialect(
    name="postgresql",
    prefix="seedlock_",
    p="%s",
    types={"text": "TEXT", "int": "INTEGER", "count": "BIGINT", "time": "DOUBLE PRECISION",
           "bytes": "BYTEA", "json": "JSONB", "serial": "BIGSERIAL"},
    autoincrement="",
    compact="",
    bytewise=' COLLATE "C"',
    add_column="ADD COLUMN IF NOT EXISTS",
    text="::text",
    real="::float8",
    bigint="::bigint",
    least="LEAST",
    greatest="GREATEST",
    bucket="floor({x} / %s::float8)::bigint",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    family: str
    """A key of `Dialect.types`."""
    null: bool = False
    added: int | None = None
    """The schema version that added it to its table (None: made with the table)."""
    bytewise: bool = False
    """Compared byte by byte (`Dialect.bytewise`)."""


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    added: int | None = None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    since: int
    """The schema version that made it."""
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """The primary key (one column: declared on the column, as SQLite's
    rowid alias ``INTEGER PRIMARY KEY`` must be)."""
    indexes: tuple[Index, ...] = ()
    compact: bool = False


TABLES: Final = (
    Table("outputs", 1, (
        Column("request_hash", "text"),
        Column("backend_id", "text"),
        Column("output_hash", "text"),
        Column("model_key", "text"),
        Column("system_fingerprint", "text", null=True),
        Column("count", "count"),
        Column("first_seen", "time"),
        Column("last_seen", "time"),
        Column("output_text", "text", null=True),  # only with capture_content
        # Sizes a change without the text (`_sketch`).
        Column("sketch", "bytes", null=True, added=3),
    ), key=("request_hash", "backend_id", "output_hash"), indexes=(
        Index("outputs_last_seen", ("last_seen",)),
        Index("outputs_model_key", ("model_key",)),
    )),
    Table("fingerprints", 1, (
        Column("model_key", "text"),
        Column("fingerprint_key", "text"),  # `fingerprint_key()`
        Column("system_fingerprint", "text", null=True),
        Column("count", "count"),
        Column("first_seen", "time"),
        Column("last_seen", "time"),
        # The backend identity of the last call with it (`_identity`, JSON).
        Column("identity", "text", null=True, added=4),
    ), key=("model_key", "fingerprint_key")),
    Table("events", 1, (
        Column("id", "serial"),
        Column("name", "text"),
        Column("at", "time"),
        Column("fields", "json"),
        # A retried write stores an event once (unique, NULL allowed).
        Column("event_id", "text", null=True, added=2),
    ), key=("id",), indexes=(
        Index("events_at", ("at",)),
        Index("events_event_id", ("event_id",), unique=True, added=2),
    )),
    Table("schema_version", 1, (Column("version", "int"),), key=()),
    # Ids of records written but not yet acknowledged: a retried write counts
    # each record once (`BaselineStore.acknowledge`).
    Table("record_ids", 2, (
        Column("record_id", "text", bytewise=True),
        Column("at", "time"),
    ), key=("record_id",), compact=True),
    # The sketch key, made once per store (`SKETCH_KEY_NAME`).
    Table("meta", 3, (Column("name", "text"), Column("value", "bytes")), key=("name",),
          compact=True),
    # Calls per in-flight bucket (`_inflight`); ``lowest``: the bucket's lowest
    # count, to sort buckets in SQL.
    Table("inflight", 4, (
        Column("model_key", "text"),
        Column("backend_id", "text"),
        Column("bucket", "text"),
        Column("lowest", "int"),
        Column("calls", "count"),
        Column("repeat_calls", "count"),
        Column("known_repeats", "count"),
    ), key=("model_key", "backend_id", "bucket")),
    # Recorded request payloads, one per request hash (`_payload`).
    Table("payloads", 5, (
        Column("request_hash", "text"),
        Column("payload", "text"),
        Column("first_seen", "time"),
    ), key=("request_hash",)),
)  # fmt: skip
TABLE: Final = {t.name: t for t in TABLES}


def _column_sql(d: Dialect, table: Table, c: Column) -> str:
    sql = f"{c.name} {d.types[c.family]}{d.bytewise if c.bytewise else ''}"
    # A one-column key is declared as every version did, without NOT NULL
    # (PostgreSQL and WITHOUT ROWID imply it).
    if table.key == (c.name,):
        return sql + " PRIMARY KEY" + (d.autoincrement if c.family == "serial" else "")
    return sql if c.null else sql + " NOT NULL"


def create_table(d: Dialect, name: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a table as its version made it."""
    t = TABLE[name]
    lines = [_column_sql(d, t, c) for c in t.columns if c.added is None]
    if len(t.key) > 1:
        lines.append(f"PRIMARY KEY ({', '.join(t.key)})")
    body = ",\n    ".join(lines)
    return (
        f"CREATE TABLE IF NOT EXISTS {d.prefix}{t.name} (\n    {body}\n)"
        f"{d.compact if t.compact else ''}"
    )


def _create_index(d: Dialect, t: Table, i: Index) -> str:
    unique = "UNIQUE " if i.unique else ""
    return (
        f"CREATE {unique}INDEX IF NOT EXISTS {d.prefix}{i.name} "
        f"ON {d.prefix}{t.name} ({', '.join(i.columns)})"
    )


def migration(d: Dialect, version: int) -> list[str]:
    """The statements that take a store from ``version - 1`` to ``version``."""
    out: list[str] = []
    for t in TABLES:
        if t.since == version:
            out.append(create_table(d, t.name))
        elif t.since < version:
            out += [
                f"ALTER TABLE {d.prefix}{t.name} {d.add_column} {_column_sql(d, t, c)}"
                for c in t.columns
                if c.added == version
            ]
        out += [_create_index(d, t, i) for i in t.indexes if (i.added or t.since) == version]
    return out


def _has(table: str, column: str | None, version: int) -> bool:
    """Whether a store of ``version`` has the table (and column)."""
    t = TABLE[table]
    added = t.since if column is None else next(c.added for c in t.columns if c.name == column)
    return (added or t.since) <= version


# -- queries: ``{outputs}`` etc. name the tables; ``{p}`` is the placeholder;
# ``{text}``/``{real}``/``{bigint}`` the casts of `Dialect`.

_UPSERT_OUTPUT = """
INSERT INTO {outputs} (request_hash, backend_id, output_hash, model_key, system_fingerprint,
                       count, first_seen, last_seen, output_text, sketch)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (request_hash, backend_id, output_hash) DO UPDATE SET
    count = {outputs}.count + excluded.count,
    first_seen = {least}({outputs}.first_seen, excluded.first_seen),
    last_seen = {greatest}({outputs}.last_seen, excluded.last_seen),
    output_text = coalesce({outputs}.output_text, excluded.output_text),
    sketch = coalesce({outputs}.sketch, excluded.sketch)
"""
# Every SET expression reads the row as it was (SQL and SQLite alike).
_UPSERT_FINGERPRINT = """
INSERT INTO {fingerprints} (model_key, fingerprint_key, system_fingerprint, count,
                            first_seen, last_seen, identity)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (model_key, fingerprint_key) DO UPDATE SET
    count = {fingerprints}.count + excluded.count,
    first_seen = {least}({fingerprints}.first_seen, excluded.first_seen),
    last_seen = {greatest}({fingerprints}.last_seen, excluded.last_seen),
    identity = CASE WHEN excluded.last_seen >= {fingerprints}.last_seen
                    THEN coalesce(excluded.identity, {fingerprints}.identity)
                    ELSE {fingerprints}.identity END
"""
_UPSERT_INFLIGHT = """
INSERT INTO {inflight} (model_key, backend_id, bucket, lowest, calls, repeat_calls,
                        known_repeats)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (model_key, backend_id, bucket) DO UPDATE SET
    calls = {inflight}.calls + excluded.calls,
    repeat_calls = {inflight}.repeat_calls + excluded.repeat_calls,
    known_repeats = {inflight}.known_repeats + excluded.known_repeats
"""
_INSERT_PAYLOAD = (
    "INSERT INTO {payloads} (request_hash, payload, first_seen) VALUES ({p}, {p}, {p}) "
    "ON CONFLICT (request_hash) DO NOTHING"
)
_INSERT_EVENT = (
    "INSERT INTO {events} (name, at, fields, event_id) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_SKETCH_KEY = (
    "INSERT INTO {meta} (name, value) VALUES ({p}, {p}) ON CONFLICT (name) DO NOTHING"
)

_OUTPUTS = (
    "SELECT request_hash, output_hash, backend_id, system_fingerprint, count, first_seen, "
    "last_seen, output_text, {sketch} FROM {outputs} WHERE request_hash = {p} "
    "ORDER BY first_seen, backend_id, output_hash"
)
_FINGERPRINTS = (
    "SELECT model_key, system_fingerprint, count, first_seen, last_seen, {identity} "
    "FROM {fingerprints} WHERE model_key = {p} ORDER BY last_seen, first_seen"
)
_REQUESTS = """
SELECT request_hash, min(model_key), sum(count){bigint}, count(DISTINCT output_hash),
       count(DISTINCT backend_id), min(first_seen), max(last_seen)
FROM {outputs}
WHERE ({p}{text} IS NULL OR model_key = {p}{text})
GROUP BY request_hash
ORDER BY max(last_seen) DESC, request_hash DESC LIMIT {p}
"""
# The aggregation runs in the database: one row per (model, backend) is read.
_BACKENDS = """
SELECT model_key, backend_id, max(system_fingerprint), count(*), sum(n), sum(n - 1),
       sum(n - k), sum(CASE WHEN n >= 2 THEN 1 ELSE 0 END),
       sum(CASE WHEN n >= 2 AND k = 1 THEN 1 ELSE 0 END), min(fs), max(ls)
FROM (
    SELECT model_key, backend_id, request_hash, max(system_fingerprint) AS system_fingerprint,
           sum(count) AS n, count(*) AS k, min(first_seen) AS fs, max(last_seen) AS ls
    FROM {outputs}
    WHERE ({p}{text} IS NULL OR model_key = {p}{text})
    GROUP BY model_key, backend_id, request_hash
) AS per_request
GROUP BY model_key, backend_id
ORDER BY model_key, min(fs), backend_id
"""
# Per (model, bucket), aggregated in the database.
_IN_FLIGHT = """
SELECT model_key, bucket, sum(calls), sum(repeat_calls), sum(known_repeats)
FROM {inflight}
WHERE ({p}{text} IS NULL OR model_key = {p}{text})
GROUP BY model_key, bucket
ORDER BY model_key, min(lowest)
"""
# Per (model, backend, time bucket); ``{bucket_min}``/``{bucket_row}`` turn an
# epoch-seconds expression into a bucket number (`Dialect.bucket`, whose
# width is the first parameter of each branch: `rate_bucket_params`).
_RATE_BUCKETS = """
SELECT model_key, backend_id, b, sum(requests), sum(calls), sum(repeats), sum(known), sum(outs)
FROM (
    SELECT model_key, backend_id, {bucket_min} AS b, 1 AS requests, sum(count) AS calls,
           sum(count) - 1 AS repeats, sum(count) - count(*) AS known, 0 AS outs
    FROM {outputs}
    WHERE ({p}{text} IS NULL OR model_key = {p}{text})
    GROUP BY model_key, backend_id, request_hash
    UNION ALL
    SELECT model_key, backend_id, {bucket_row} AS b, 0, 0, 0, 0, 1
    FROM {outputs}
    WHERE ({p}{text} IS NULL OR model_key = {p}{text})
) AS t
GROUP BY model_key, backend_id, b
ORDER BY model_key, backend_id, b
"""
# Requests with more than one distinct output, most distinct outputs first.
_DRIFTING = """
SELECT request_hash, min(model_key), sum(count), count(DISTINCT output_hash),
       count(DISTINCT backend_id), min(first_seen), max(last_seen)
FROM {outputs}
WHERE ({p}{text} IS NULL OR model_key = {p}{text})
GROUP BY request_hash
HAVING count(DISTINCT output_hash) > 1
ORDER BY count(DISTINCT output_hash) DESC, sum(count) DESC, request_hash
LIMIT {p}
"""
_DRIFT_EVENTS = """
SELECT rh, div, count(*), sum(unexplained), min(dc), min(dt) FROM (
    SELECT {rh} AS rh, {div} AS div, {unexplained} AS unexplained, {dc} AS dc, {dt} AS dt
    FROM {events} WHERE name = {p}
) AS e
WHERE rh IN ({marks})
GROUP BY rh, div
"""
_EVENT_COUNTS = (
    "SELECT name, count(*), min(at), max(at) FROM {events} GROUP BY name "
    "ORDER BY count(*) DESC, name"
)
_EVENTS = (
    "SELECT name, at, fields FROM {events} WHERE ({p}{text} IS NULL OR name = {p}{text}) "
    "AND ({p}{real} IS NULL OR at >= {p}{real}) ORDER BY at, id LIMIT {p}"
)
_RECENT_EVENTS = "SELECT name, at, fields FROM {events} ORDER BY at DESC, id DESC LIMIT {p}"
_MODELS = (
    "SELECT model_key, system_fingerprint, count, first_seen, last_seen "
    "FROM {fingerprints} ORDER BY model_key, first_seen, fingerprint_key"
)

# Prune, ``older_than``: each takes the time. The newest fingerprint of each
# model is kept whatever its age (the next call is compared with it); record
# ids never acknowledged go too (not counted: they are bookkeeping).
_PRUNE_OLDER = (
    "DELETE FROM {outputs} WHERE last_seen < {p}",
    "DELETE FROM {events} WHERE at < {p}",
    """
DELETE FROM {fingerprints} AS f WHERE f.last_seen < {p} AND EXISTS (
    SELECT 1 FROM {fingerprints} AS g
    WHERE g.model_key = f.model_key
      AND (g.last_seen > f.last_seen OR (g.last_seen = f.last_seen
           AND g.fingerprint_key > f.fingerprint_key))
)
""",
)
_PRUNE_RECORD_IDS = "DELETE FROM {record_ids} WHERE at < {p}"
_KEEP_LAST = (
    "DELETE FROM {outputs} WHERE request_hash NOT IN (SELECT request_hash "
    "FROM {outputs} GROUP BY request_hash "
    "ORDER BY max(last_seen) DESC, request_hash DESC LIMIT {p})"
)
# A payload goes with the last output of its request.
_PRUNE_PAYLOADS = (
    "DELETE FROM {payloads} WHERE NOT EXISTS "
    "(SELECT 1 FROM {outputs} AS o WHERE o.request_hash = {payloads}.request_hash)"
)


class Queries:
    """The statements both stores run, in one dialect, for a store of
    ``version`` (a read-only SQLite store may be older: a column it lacks
    reads as NULL)."""

    def __init__(self, d: Dialect, version: int = SCHEMA_VERSION) -> None:
        self.dialect = d
        names = {t.name: d.prefix + t.name for t in TABLES}
        names.update(
            p=d.p, text=d.text, real=d.real, bigint=d.bigint, least=d.least,
            greatest=d.greatest,
            bucket_min=d.bucket.format(x="min(first_seen)"),
            bucket_row=d.bucket.format(x="first_seen"),
            sketch="sketch" if _has("outputs", "sketch", version) else "NULL",
            identity="identity" if _has("fingerprints", "identity", version) else "NULL",
        )  # fmt: skip
        self._names = names
        self.upsert_output = _UPSERT_OUTPUT.format_map(names)
        self.upsert_fingerprint = _UPSERT_FINGERPRINT.format_map(names)
        self.upsert_inflight = _UPSERT_INFLIGHT.format_map(names)
        self.insert_payload = _INSERT_PAYLOAD.format_map(names)
        self.insert_event = _INSERT_EVENT.format_map(names)
        self.insert_sketch_key = _INSERT_SKETCH_KEY.format_map(names)
        self.sketch_key = "SELECT value FROM {meta} WHERE name = {p}".format_map(names)
        self.outputs = _OUTPUTS.format_map(names)
        self.fingerprints = _FINGERPRINTS.format_map(names)
        self.payload = "SELECT payload FROM {payloads} WHERE request_hash = {p}".format_map(names)
        self.payload_hashes = (
            "SELECT request_hash FROM {payloads} ORDER BY first_seen, request_hash"
        ).format_map(names)
        self.requests = _REQUESTS.format_map(names)
        self.backends = _BACKENDS.format_map(names)
        self.in_flight = _IN_FLIGHT.format_map(names)
        self.rate_buckets = _RATE_BUCKETS.format_map(names)
        self.drifting = _DRIFTING.format_map(names)
        self.event_counts = _EVENT_COUNTS.format_map(names)
        self.events = _EVENTS.format_map(names)
        self.recent_events = _RECENT_EVENTS.format_map(names)
        self.models = _MODELS.format_map(names)
        self.prune_older = tuple(q.format_map(names) for q in _PRUNE_OLDER)
        self.prune_record_ids = _PRUNE_RECORD_IDS.format_map(names)
        self.keep_last = _KEEP_LAST.format_map(names)
        self.prune_payloads = _PRUNE_PAYLOADS.format_map(names)
        self.has_meta = _has("meta", None, version)
        self.has_inflight = _has("inflight", None, version)
        self.has_payloads = _has("payloads", None, version)

    def drift_events(self, get: Callable[[str, str], str], n: int) -> str:
        """Per (request hash, divergence range) among ``n`` request hashes: the
        output_drift events, the unexplained ones, the earliest char and token
        difference (rows for `merge_drift_events`). ``get(key, kind)`` is the
        dialect's JSON accessor: ``kind`` is ``"text"``, ``"int"`` or ``"false"``
        (1 when the value is JSON false)."""
        return _DRIFT_EVENTS.format_map({
            **self._names,
            "rh": get(ev.K_REQUEST_HASH, "text"),
            "div": get(ev.K_DIVERGENCE_AT, "text"),
            "unexplained": get(ev.K_EXPLAINED, "false"),
            "dc": get(ev.K_DIFF_CHAR, "int"),
            "dt": get(ev.K_DIFF_TOKEN, "int"),
            "marks": ", ".join([self.dialect.p] * n),
        })  # fmt: skip
