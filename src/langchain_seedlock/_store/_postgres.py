"""The PostgreSQL store (``postgresql://``), shared by a fleet of workers.

Same semantics as the SQLite store: one transaction per ``write()`` of atomic
upserts (``count = count + excluded.count``), so workers on many machines
give exact counts. psycopg 3 is imported lazily (the ``postgres`` extra). The
password never leaves this module: ``url``, reprs and every error message
carry the redacted URL, and driver messages are scrubbed before re-raising.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langchain_seedlock import _fork
from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store._base import (
    BaselineStore,
    FingerprintSeen,
    OutputSeen,
    RequestSummary,
    StoredEvent,
)
from langchain_seedlock._store._memory import Batch

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "sslpassword"})


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


SCHEMA_VERSION = 1
# pg_advisory_xact_lock key: serializes first use by many workers at once.
_MIGRATION_LOCK = 0x5EED_10C4
_T = TypeVar("_T")
_NULL_FP = "n:"

_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS seedlock_outputs (
    request_hash TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    output_hash TEXT NOT NULL,
    model_key TEXT NOT NULL,
    system_fingerprint TEXT,
    count BIGINT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    output_text TEXT,
    PRIMARY KEY (request_hash, backend_id, output_hash)
);
CREATE INDEX IF NOT EXISTS seedlock_outputs_last_seen ON seedlock_outputs (last_seen);
CREATE INDEX IF NOT EXISTS seedlock_outputs_model_key ON seedlock_outputs (model_key);
CREATE TABLE IF NOT EXISTS seedlock_fingerprints (
    model_key TEXT NOT NULL,
    fingerprint_key TEXT NOT NULL,
    system_fingerprint TEXT,
    count BIGINT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model_key, fingerprint_key)
);
CREATE TABLE IF NOT EXISTS seedlock_events (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    fields JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS seedlock_events_at ON seedlock_events (at);
""",
}

UPSERT_OUTPUT = """
INSERT INTO seedlock_outputs AS o (request_hash, backend_id, output_hash, model_key,
    system_fingerprint, count, first_seen, last_seen, output_text)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (request_hash, backend_id, output_hash) DO UPDATE SET
    count = o.count + excluded.count,
    first_seen = LEAST(o.first_seen, excluded.first_seen),
    last_seen = GREATEST(o.last_seen, excluded.last_seen),
    output_text = COALESCE(o.output_text, excluded.output_text)
"""

UPSERT_FINGERPRINT = """
INSERT INTO seedlock_fingerprints AS f (model_key, fingerprint_key, system_fingerprint,
    count, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (model_key, fingerprint_key) DO UPDATE SET
    count = f.count + excluded.count,
    first_seen = LEAST(f.first_seen, excluded.first_seen),
    last_seen = GREATEST(f.last_seen, excluded.last_seen)
"""

INSERT_EVENT = "INSERT INTO seedlock_events (name, at, fields) VALUES (%s, %s, %s)"

Q_OUTPUTS = (
    "SELECT request_hash, output_hash, backend_id, system_fingerprint, count, first_seen, "
    "last_seen, output_text FROM seedlock_outputs WHERE request_hash = %s "
    "ORDER BY first_seen, backend_id, output_hash"
)
Q_FINGERPRINTS = (
    "SELECT model_key, system_fingerprint, count, first_seen, last_seen "
    "FROM seedlock_fingerprints WHERE model_key = %s ORDER BY last_seen, first_seen"
)


def _import_psycopg() -> Any:
    try:
        # Lazy: the driver is an optional extra.
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise StoreError(
            "the PostgreSQL store needs psycopg 3 and psycopg-pool: "
            "pip install 'langchain-seedlock[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


def _secrets_of(url: str) -> list[str]:
    secrets: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            secrets += [parts.password, unquote(parts.password)]
        secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS and v]
    except ValueError:
        # Malformed URL (e.g. an unclosed IPv6 bracket): libpq quotes the whole
        # URI in its error, so find the password the way redact_url does.
        match = re.match(r"^[^:/]*://([^/@]*)@", url)
        if match and ":" in match.group(1):
            password = match.group(1).split(":", 1)[1]
            secrets += [password, unquote(password)]
    # Longest first so a secret containing another is replaced whole.
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def _rows_of(
    records: Sequence[CallRecord],
    events: Sequence[StoredEvent],
    capture_content: bool,
    jsonb: Any,
) -> tuple[list[Any], list[Any], list[Any]]:
    """Parameter rows of one write: outputs, fingerprints, events (sync and async alike)."""
    batch = Batch.of(records, capture_content=capture_content)
    outputs = [
        (rh, bid, oh, d.model_key, d.system_fingerprint, d.count, d.first_seen, d.last_seen,
         d.output_text)
        for (rh, bid, oh), d in batch.outputs.items()
    ]  # fmt: skip
    fingerprints = [
        (mk, _NULL_FP if fp is None else "s:" + fp, fp, d.count, d.first_seen, d.last_seen)
        for (mk, fp), d in batch.fingerprints.items()
    ]
    event_rows = [(e.name, e.at, jsonb(_jsonable(e.fields))) for e in events]
    return outputs, fingerprints, event_rows


class PostgresStore(BaselineStore):
    """A store in a PostgreSQL database, shared by many processes and machines."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        min_size: int = 0,
        max_size: int = 4,
        connect: bool = True,
    ) -> None:
        self.url = redact_url(url)
        self._secrets = _secrets_of(url)
        self._psycopg, self._pool_mod = _import_psycopg()
        # libpq only knows postgresql:// and postgres://: normalize the scheme.
        self._dsn = re.sub(r"^postgres(ql)?://", "postgresql://", url, flags=re.IGNORECASE)
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._kwargs: dict[str, Any] = {
            # libpq wants whole seconds, at least 2 (it rounds smaller values up).
            "connect_timeout": max(2, round(connect_timeout)),
            "options": f"-c statement_timeout={int(statement_timeout * 1000)}",
            "application_name": "langchain-seedlock",
        }
        self._min_size = min_size
        self._max_size = max(max_size, 1)
        self._lock = threading.Lock()
        self._schema_ready = False
        self._pool: ConnectionPool[Any] | None = None
        self._apools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncConnectionPool[Any]
        ] = weakref.WeakKeyDictionary()
        self._closed = False
        _fork.register(self, after_in_child=PostgresStore._after_fork_in_child)
        if connect:
            self._ensure_schema()

    # -- errors ----------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)

    def _error(self, action: str, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        kind = type(exc).__name__
        detail = self._scrub(str(exc).strip()) or kind
        if kind == "PoolTimeout":
            detail = (
                f"no connection within {self.connect_timeout + 1:g}s "
                "(server down, unreachable, or refusing connections)"
            )
        elif "password authentication failed" in detail:
            detail = f"wrong user or password ({detail.splitlines()[-1].strip()})"
        return StoreError(f"PostgreSQL store {self.url!r}: {action} failed: {detail}")

    # -- schema ----------------------------------------------------------------
    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seedlock_schema_version (version INT NOT NULL)"
            )
            row = conn.execute("SELECT max(version) FROM seedlock_schema_version").fetchone()
            version = (row[0] if row else None) or 0
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"PostgreSQL store {self.url!r} has schema version {version}, newer than "
                    f"{SCHEMA_VERSION} which this langchain-seedlock understands: upgrade "
                    "langchain-seedlock on this worker."
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(_MIGRATIONS[v])
                conn.execute("INSERT INTO seedlock_schema_version (version) VALUES (%s)", (v,))

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._lock:
            if self._schema_ready:
                return
            if self._closed:
                raise StoreError(f"PostgreSQL store {self.url!r} is closed")
            try:
                with self._psycopg.connect(self._dsn, **self._kwargs) as conn:
                    self._migrate(conn)
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - every driver error becomes a StoreError
                # `from None`: the driver's exception may carry the DSN.
                raise self._error("connecting", exc) from None
            self._schema_ready = True

    def _new_pool(self, pool_class: Any, name: str) -> Any:
        """A closed pool (sync or asyncio class) with this store's settings."""
        return pool_class(
            self._dsn,
            kwargs=self._kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            timeout=self.connect_timeout + 1,
            # A server restart leaves dead connections in the pool: test
            # each one before handing it out.
            check=pool_class.check_connection,
            name=name,
        )

    def _get_pool(self) -> ConnectionPool[Any]:
        self._ensure_schema()
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool(self._pool_mod.ConnectionPool, "langchain-seedlock")
                self._pool.open(wait=False)
            return self._pool

    def _run(self, action: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        if self._closed:
            raise StoreError(f"PostgreSQL store {self.url!r} is closed")
        errors = self._psycopg.errors
        retryable = (errors.DeadlockDetected, errors.SerializationFailure)
        for attempt in range(5):
            try:
                pool = self._get_pool()
                with pool.connection() as conn:  # commits on success, rolls back on error
                    return fn(conn)
            except retryable:
                if attempt == 4:
                    raise
                continue
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - scrubbed, re-raised as StoreError
                raise self._error(action, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads -----------------------------------------------------------------
    def outputs_for(self, request_hash: str) -> list[OutputSeen]:
        def q(c: psycopg.Connection[Any]) -> list[OutputSeen]:
            return [OutputSeen(*r) for r in c.execute(Q_OUTPUTS, (request_hash,)).fetchall()]

        return self._run("reading outputs", q)

    def fingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        def q(c: psycopg.Connection[Any]) -> list[FingerprintSeen]:
            return [FingerprintSeen(*r) for r in c.execute(Q_FINGERPRINTS, (model_key,)).fetchall()]

        return self._run("reading fingerprints", q)

    def requests(self, *, model_key: str | None = None, limit: int = 100) -> list[RequestSummary]:
        def q(c: psycopg.Connection[Any]) -> list[RequestSummary]:
            rows = c.execute(
                "SELECT request_hash, min(model_key), sum(count)::bigint, "
                "count(DISTINCT output_hash), count(DISTINCT backend_id), min(first_seen), "
                "max(last_seen) FROM seedlock_outputs "
                "WHERE (%s::text IS NULL OR model_key = %s::text) GROUP BY request_hash "
                "ORDER BY max(last_seen) DESC, request_hash DESC LIMIT %s",
                (model_key, model_key, max(limit, 0)),
            ).fetchall()
            return [RequestSummary(*r) for r in rows]

        return self._run("reading requests", q)

    def models(self) -> list[FingerprintSeen]:
        def q(c: psycopg.Connection[Any]) -> list[FingerprintSeen]:
            rows = c.execute(
                "SELECT model_key, system_fingerprint, count, first_seen, last_seen "
                "FROM seedlock_fingerprints ORDER BY model_key, first_seen, fingerprint_key"
            ).fetchall()
            return [FingerprintSeen(*r) for r in rows]

        return self._run("reading models", q)

    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        def q(c: psycopg.Connection[Any]) -> list[StoredEvent]:
            rows = c.execute(
                "SELECT name, at, fields FROM seedlock_events "
                "WHERE (%s::text IS NULL OR name = %s::text) "
                "AND (%s::float8 IS NULL OR at >= %s::float8) ORDER BY at, id LIMIT %s",
                (name, name, since, since, max(limit, 0)),
            ).fetchall()
            return [StoredEvent(n, at, f) for n, at, f in rows]

        return self._run("reading events", q)

    # -- writes ----------------------------------------------------------------
    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        if not records and not events:
            return
        outputs, fingerprints, rows = _rows_of(
            records, events, capture_content, self._psycopg.types.json.Jsonb
        )

        def w(c: psycopg.Connection[Any]) -> None:
            with c.cursor() as cur:
                cur.executemany(UPSERT_OUTPUT, outputs)
                cur.executemany(UPSERT_FINGERPRINT, fingerprints)
                cur.executemany(INSERT_EVENT, rows)

        self._run("writing", w)

    def prune(self, *, older_than: float | None = None, keep_last: int | None = None) -> int:
        def w(c: psycopg.Connection[Any]) -> int:
            deleted = 0
            if older_than is not None:
                for sql in (
                    "DELETE FROM seedlock_outputs WHERE last_seen < %s",
                    "DELETE FROM seedlock_events WHERE at < %s",
                    # Keep the newest fingerprint of each model: the next call is
                    # compared with it.
                    "DELETE FROM seedlock_fingerprints AS f WHERE f.last_seen < %s AND EXISTS ("
                    "SELECT 1 FROM seedlock_fingerprints AS g WHERE g.model_key = f.model_key "
                    "AND (g.last_seen > f.last_seen OR (g.last_seen = f.last_seen "
                    "AND g.fingerprint_key > f.fingerprint_key)))",
                ):
                    deleted += c.execute(sql, (older_than,)).rowcount
            if keep_last is not None:
                deleted += c.execute(
                    "DELETE FROM seedlock_outputs WHERE request_hash NOT IN (SELECT request_hash "
                    "FROM seedlock_outputs GROUP BY request_hash "
                    "ORDER BY max(last_seen) DESC, request_hash DESC LIMIT %s)",
                    (max(keep_last, 0),),
                ).rowcount
            return deleted

        return self._run("pruning", w)

    # -- async -----------------------------------------------------------------
    async def _aget_pool(self) -> AsyncConnectionPool[Any]:
        if not self._schema_ready:
            await asyncio.to_thread(self._ensure_schema)
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            # One pool per event loop: an asyncio pool cannot cross loops.
            pool = self._new_pool(self._pool_mod.AsyncConnectionPool, "langchain-seedlock-async")
            await pool.open(wait=False)
            self._apools[loop] = pool
        return pool

    async def _arun(self, action: str, fn: Callable[[Any], Any]) -> Any:
        if self._closed:
            raise StoreError(f"PostgreSQL store {self.url!r} is closed")
        errors = self._psycopg.errors
        retryable = (errors.DeadlockDetected, errors.SerializationFailure)
        for attempt in range(5):
            try:
                pool = await self._aget_pool()
                async with pool.connection() as conn:
                    return await fn(conn)
            except retryable:
                if attempt == 4:
                    raise
                continue
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - scrubbed, re-raised as StoreError
                raise self._error(action, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def aoutputs_for(self, request_hash: str) -> list[OutputSeen]:
        async def q(c: Any) -> list[OutputSeen]:
            cur = await c.execute(Q_OUTPUTS, (request_hash,))
            return [OutputSeen(*r) for r in await cur.fetchall()]

        result: list[OutputSeen] = await self._arun("reading outputs", q)
        return result

    async def afingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        async def q(c: Any) -> list[FingerprintSeen]:
            cur = await c.execute(Q_FINGERPRINTS, (model_key,))
            return [FingerprintSeen(*r) for r in await cur.fetchall()]

        result: list[FingerprintSeen] = await self._arun("reading fingerprints", q)
        return result

    async def awrite(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        if not records and not events:
            return
        outputs, fingerprints, rows = _rows_of(
            records, events, capture_content, self._psycopg.types.json.Jsonb
        )

        async def w(c: Any) -> None:
            async with c.cursor() as cur:
                await cur.executemany(UPSERT_OUTPUT, outputs)
                await cur.executemany(UPSERT_FINGERPRINT, fingerprints)
                await cur.executemany(INSERT_EVENT, rows)

        await self._arun("writing", w)

    def _after_fork_in_child(self) -> None:
        """A forked child never touches the parent's pools: their sockets are the
        parent's sessions (closing one would end it) and their workers are gone.
        They are kept, never closed nor collected; the child opens new pools on
        first use."""
        _fork.keep_forever(self._pool, list(self._apools.values()))
        self._pool = None
        self._apools = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def aclose(self) -> None:
        """Close the pool of the running loop too (``close()`` cannot await it)."""
        pool = self._apools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
        self.close()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        # Async pools of other loops: their workers die with their loop; drop
        # the references so nothing keeps the loop alive.
        self._apools.clear()


def _jsonable(fields: Any) -> Any:
    # Round-trip through json so anything not JSON-native is stored as its str.
    return json.loads(json.dumps(dict(fields), default=str))
