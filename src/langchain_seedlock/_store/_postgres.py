"""The PostgreSQL store (``postgresql://``), shared by a fleet of workers.

Same semantics as the SQLite store: one transaction per ``write()`` of atomic
upserts (``count = count + excluded.count``), so workers on many machines
give exact counts, and record ids (``seedlock_record_ids``) so a batch whose
COMMIT was never acknowledged can be written again without counting twice.
psycopg 3 is imported lazily (the ``postgres`` extra). The password never
leaves this module: ``url``, reprs and every error message carry the
redacted URL, and driver messages are scrubbed before re-raising.

Opening never fails because the server is down: a malformed URL, wrong
credentials or a newer schema raise at once, but a server that refuses,
times out or is starting up leaves a store that connects on first use (the
background writer keeps retrying and buffering meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from langchain_seedlock import _fork
from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import SECRET_PARAMS as _SECRET_PARAMS
from langchain_seedlock._redact import redact_url
from langchain_seedlock._sketch import new_key
from langchain_seedlock._store._base import FingerprintSeen, OutputSeen, StoredEvent
from langchain_seedlock._store._memory import AckedIds, Sketched, sketches_of, unique_records
from langchain_seedlock._store._schema import (
    POSTGRES,
    SCHEMA_VERSION,
    SKETCH_KEY_NAME,
    Queries,
    create_table,
    migration,
)
from langchain_seedlock._store._sql import SQLStore, write_statements

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

# pg_advisory_xact_lock key: serializes first use by many workers at once.
_MIGRATION_LOCK = 0x5EED_10C4
_T = TypeVar("_T")
_Q = Queries(POSTGRES)

# PostgreSQL only (see `_schema`): a batch's record ids go in and out as one
# array each, the ids that were new coming back (only their records count).
FORGET_RECORD_IDS = "DELETE FROM seedlock_record_ids WHERE record_id = ANY(%s)"
INSERT_RECORD_IDS = (
    "INSERT INTO seedlock_record_ids (record_id, at) "
    "SELECT * FROM unnest(%s::text[], %s::float8[]) ON CONFLICT DO NOTHING RETURNING record_id"
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


# Server messages of failures that waiting will not fix (checked when the
# error has no SQLSTATE, as connection failures do). "connection is bad" is
# libpq refusing an option before any network traffic (e.g. sslmode=bogus).
_CONFIG_FAILURE = re.compile(
    r"authentication failed|no pg_hba\.conf entry|role \S+ does not exist|"
    r"database \S+ does not exist|permission denied|connection is bad",
    re.IGNORECASE,
)
# SQLSTATE classes of outages: connection exception, operator intervention
# (shutdown, starting up), insufficient resources (too many clients).
_OUTAGE_CLASSES = frozenset({"08", "57", "53"})


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage that waiting can fix (server down, unreachable,
    starting up, full) rather than a configuration error (credentials, grants,
    options). Unrecognised failures count as outages: opening the store then
    succeeds and its first use reports them."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _OUTAGE_CLASSES
    return not _CONFIG_FAILURE.search(str(exc))


def _check_dsn(psycopg: Any, dsn: str) -> None:
    """Raise ValueError for a URL libpq cannot parse or a port that is no port,
    without connecting."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ValueError(str(exc).strip()) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")


def _ids_of(records: Sequence[CallRecord]) -> tuple[list[str], list[float]]:
    """The ids and times of the records with an id (`INSERT_RECORD_IDS`)."""
    pairs = [(r.record_id, r.at) for r in records if r.record_id is not None]
    return [i for i, _ in pairs], [at for _, at in pairs]


class _PoolBusyError(Exception):
    """Every connection of the pool stayed in use for the whole wait."""


class _Connections:
    """A small pool of synchronous connections, each opened by the thread that
    needs it, at most ``max_size`` open at once.

    Why not `psycopg_pool.ConnectionPool`: it opens connections in a
    background worker and, after a failed attempt, retries on its own
    schedule (1, 2, 4, 8... s, for up to 5 min) while callers wait for their
    timeout. After an outage the store then came back only at the pool's
    next attempt (as late as the outage was long), and a read on a model
    call waited the whole timeout even while the server refused connections
    at once. Here a refused connection fails at once, and when to try again
    is the caller's decision (the background writer's backoff).
    """

    def __init__(self, connect: Callable[[], Any], max_size: int, timeout: float) -> None:
        self._connect = connect
        self._max_size = max_size
        self._timeout = timeout
        self._cond = threading.Condition()
        self._idle: list[Any] = []
        self._open = 0  # connections idle, in use, or being opened
        self._closed = False

    def get(self) -> tuple[Any, bool]:
        """A connection, and whether it was used before (it may be stale)."""
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop(), True
                if self._open < self._max_size:
                    self._open += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _PoolBusyError(
                        f"all {self._max_size} connections stayed busy for {self._timeout:g}s"
                    )
                self._cond.wait(remaining)
        try:
            return self._connect(), False
        except BaseException:
            self._release_slot()
            raise

    def put(self, conn: Any, *, broken: bool = False) -> None:
        """Give a connection back; a broken one (or any, once closed) is closed."""
        with self._cond:
            keep = not (broken or self._closed or conn.closed)
            if keep:
                self._idle.append(conn)
                self._cond.notify()
        if not keep:
            self._discard([conn])

    def drop_idle(self) -> None:
        """Close the idle connections (after one of them turned out dead)."""
        with self._cond:
            idle, self._idle = self._idle, []
        self._discard(idle)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        self.drop_idle()

    def _discard(self, conns: list[Any]) -> None:
        for conn in conns:
            with contextlib.suppress(Exception):  # closing a dead connection is best effort
                conn.close()
            self._release_slot()

    def _release_slot(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()


class PostgresStore(SQLStore):
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
        super().__init__(_Q, _json_get, dict)
        self.url = redact_url(url)
        self._secrets = _secrets_of(url)
        self._psycopg, self._pool_mod = _import_psycopg()
        # libpq only knows postgresql:// and postgres://: normalize the scheme.
        self._dsn = re.sub(r"^postgres(ql)?://", "postgresql://", url, flags=re.IGNORECASE)
        try:
            _check_dsn(self._psycopg, self._dsn)
        except ValueError as exc:
            raise StoreError(
                f"PostgreSQL store {self.url!r}: connecting failed: invalid URL: "
                f"{self._scrub(str(exc))}"
            ) from None
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
        self._conns = _Connections(self._connect, self._max_size, timeout=connect_timeout + 1)
        self._apools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncConnectionPool[Any]
        ] = weakref.WeakKeyDictionary()
        self._closed = False
        _fork.register(self, after_in_child=PostgresStore._after_fork_in_child)
        if connect:
            try:
                self._setup()
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - every driver error becomes a StoreError
                if not is_outage(exc):
                    raise self._error("connecting", exc) from None
                # The server is down or unreachable: not an error at open (an
                # application must boot without its observability store); the
                # first read or write connects, or reports the failure.

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
        if isinstance(exc, _PoolBusyError):
            detail = str(exc)
        elif kind == "PoolTimeout":
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
            # Made before the steps: it says which steps to run.
            conn.execute(create_table(POSTGRES, "schema_version"))
            row = conn.execute("SELECT max(version) FROM seedlock_schema_version").fetchone()
            version = (row[0] if row else None) or 0
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"PostgreSQL store {self.url!r} has schema version {version}, newer than "
                    f"{SCHEMA_VERSION} which this langchain-seedlock understands: upgrade "
                    "langchain-seedlock on this worker."
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in migration(POSTGRES, v):
                    conn.execute(stmt)
                conn.execute("INSERT INTO seedlock_schema_version (version) VALUES (%s)", (v,))
            if version < 3:
                conn.execute(_Q.insert_sketch_key, (SKETCH_KEY_NAME, new_key()))

    def _connect(self) -> psycopg.Connection[Any]:
        # Autocommit: a read is one statement; writes open a transaction.
        conn: psycopg.Connection[Any] = self._psycopg.connect(
            self._dsn, autocommit=True, **self._kwargs
        )
        return conn

    def _setup(self) -> None:
        """Connect and migrate once (driver errors are raised as they are)."""
        with self._lock:
            if self._schema_ready:
                return
            if self._closed:
                raise StoreError(f"PostgreSQL store {self.url!r} is closed")
            conn, _ = self._conns.get()
            try:
                self._migrate(conn)
            except BaseException:
                self._conns.put(conn, broken=True)
                raise
            self._conns.put(conn)  # the first connection of the pool
            self._schema_ready = True

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            self._setup()
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error becomes a StoreError
            # `from None`: the driver's exception may carry the DSN.
            raise self._error("connecting", exc) from None

    def _new_pool(self, pool_class: Any, name: str) -> Any:
        """A closed asyncio pool with this store's settings."""
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

    def _run(
        self,
        action: str,
        fn: Callable[[psycopg.Connection[Any]], _T],
        *,
        transaction: bool = False,
    ) -> _T:
        """``fn(conn)`` on a pooled connection (in one transaction if asked).

        Retried at once on a deadlock, and on a connection that was idle in
        the pool and turns out dead (a server restart kills them all); every
        other failure is a `StoreError` for the caller to retry later. Both
        retries are safe for writes, which are idempotent.
        """
        if self._closed:
            raise StoreError(f"PostgreSQL store {self.url!r} is closed")
        errors = self._psycopg.errors
        retryable = (errors.DeadlockDetected, errors.SerializationFailure)
        for attempt in range(5):
            last = attempt == 4
            self._ensure_schema()
            try:
                conn, reused = self._conns.get()
            except Exception as exc:  # noqa: BLE001 - scrubbed, re-raised as StoreError
                raise self._error(action, exc) from None
            try:
                if transaction:
                    with conn.transaction():
                        result = fn(conn)
                else:
                    result = fn(conn)
            except retryable as exc:
                self._conns.put(conn)
                if last:
                    raise self._error(action, exc) from None
                continue
            except Exception as exc:  # noqa: BLE001 - scrubbed, re-raised as StoreError
                broken = bool(conn.broken or conn.closed)
                self._conns.put(conn, broken=broken)
                if broken and reused and not last:
                    self._conns.drop_idle()  # from the same dead server, most likely
                    continue
                raise self._error(action, exc) from None
            except BaseException:
                self._conns.put(conn, broken=True)  # interrupted: state unknown
                raise
            self._conns.put(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- what `SQLStore` asks of a dialect -----------------------------------
    def _read(self, action: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        return self._run(action, fn)

    def _transaction(self, action: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        return self._run(action, fn, transaction=True)

    def _event_rows(self, events: Sequence[StoredEvent]) -> list[Any]:
        jsonb = self._psycopg.types.json.Jsonb
        return [(e.name, e.at, jsonb(_jsonable(e.fields)), e.event_id) for e in events]

    def _count_once(
        self, cur: psycopg.Cursor[Any], records: Sequence[CallRecord], forget: Sequence[str]
    ) -> list[CallRecord]:
        if forget:
            cur.execute(FORGET_RECORD_IDS, (list(forget),))
        ids, ats = _ids_of(records)
        new = {row[0] for row in cur.execute(INSERT_RECORD_IDS, (ids, ats))} if ids else set()
        return [r for r in records if r.record_id is None or r.record_id in new]

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
            cur = await c.execute(_Q.outputs, (request_hash,))
            return [OutputSeen(*r) for r in await cur.fetchall()]

        result: list[OutputSeen] = await self._arun("reading outputs", q)
        return result

    async def afingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        async def q(c: Any) -> list[FingerprintSeen]:
            cur = await c.execute(_Q.fingerprints, (model_key,))
            return [FingerprintSeen(*r) for r in await cur.fetchall()]

        result: list[FingerprintSeen] = await self._arun("reading fingerprints", q)
        return result

    async def _asketch_key(self) -> bytes | None:
        async def q(c: Any) -> bytes | None:
            cur = await c.execute(_Q.sketch_key, (SKETCH_KEY_NAME,))
            row = await cur.fetchone()
            return None if row is None else bytes(row[0])

        key: bytes | None = await self._arun("reading the sketch key", q)
        self._sketch_key = key
        return key

    async def awrite(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        if not records and not events:
            return
        unique = unique_records(records)
        event_rows = self._event_rows(events)
        key = self._sketch_key
        if key is None and unique:
            key = await self._asketch_key()
        sketches = sketches_of(unique, key, self._sketched)
        forget = self._acked.take()

        async def w(c: Any) -> None:
            async with c.cursor() as cur:  # `SQLStore.write`, awaited
                if forget:
                    await cur.execute(FORGET_RECORD_IDS, (forget,))
                ids, ats = _ids_of(unique)
                new: set[str] = set()
                if ids:
                    await cur.execute(INSERT_RECORD_IDS, (ids, ats))
                    new = {row[0] for row in await cur.fetchall()}
                fresh = [r for r in unique if r.record_id is None or r.record_id in new]
                for sql, rows in write_statements(_Q, fresh, event_rows, capture_content, sketches):
                    await cur.executemany(sql, rows)

        try:
            await self._arun("writing", w)
        except BaseException:
            self._acked.put_back(forget)
            raise
        self._sketched.add(sketches)

    def _after_fork_in_child(self) -> None:
        """A forked child never touches the parent's connections: their sockets
        are the parent's sessions (closing one, or letting it be collected,
        sends a terminate message that ends the parent's session) and the
        async pools' workers are gone. They are kept, never closed nor
        collected; the child opens its own on first use. Ids the parent has
        yet to forget are the parent's."""
        with self._conns._cond:
            inherited = list(self._conns._idle)
        _fork.keep_forever(self._conns, inherited, list(self._apools.values()))
        self._conns = _Connections(self._connect, self._max_size, timeout=self._conns._timeout)
        self._acked = AckedIds()
        self._sketched = Sketched()  # its lock may be held by a parent's thread
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
        self._conns.close()
        # Async pools of other loops: their workers die with their loop; drop
        # the references so nothing keeps the loop alive.
        self._apools.clear()


def _json_get(key: str, kind: str) -> str:
    """An event field in SQL (see `Queries.drift_events`)."""
    if kind == "false":
        return f"(CASE WHEN fields -> '{key}' = 'false'::jsonb THEN 1 ELSE 0 END)"
    if kind == "int":
        # Only JSON numbers: a non-numeric value must not fail the whole query.
        value = f"fields -> '{key}'"
        return f"(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value})::numeric::bigint END)"
    return f"(fields ->> '{key}')"


def _jsonable(fields: Any) -> Any:
    # Round-trip through json so anything not JSON-native is stored as its str.
    return json.loads(json.dumps(dict(fields), default=str))
