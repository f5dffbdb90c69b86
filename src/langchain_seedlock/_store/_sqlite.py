"""The SQLite store (``sqlite:///path``): the embedded default.

WAL mode lets readers run while one process writes; every ``write()`` is one
``BEGIN IMMEDIATE`` transaction of atomic upserts (``count = count +
excluded.count``), so several processes writing at once still give exact
counts, and each record's id enters ``record_ids`` in the same transaction,
so a retried batch is counted once. Each thread gets its own connection
(sqlite3 connections must not be shared across threads mid-transaction).

Fork: a SQLite connection must never cross ``os.fork()`` (SQLite's "How To
Corrupt" guide, 2.6). Before a fork, the store waits (up to `FORK_WAIT`
seconds) until none of its threads is inside SQLite, so no SQLite mutex is
held by a thread the child will not have. In the child, the connections
inherited from the parent are closed (only those idle at the fork; a busy one
is kept open, never used) and the child opens its own on first use. Closing
them matters: while they are open, SQLite's per-file lock bookkeeping says
this process holds the parent's locks, and a new connection would then skip
taking the real (per-process) file locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

from langchain_seedlock import _fork
from langchain_seedlock._args import check_bool, check_number
from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._events import OUTPUT_DRIFT
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import redact_url
from langchain_seedlock._sketch import new_key
from langchain_seedlock._store._base import (
    BackendSummary,
    BaselineStore,
    DriftingRequest,
    EventCount,
    FingerprintSeen,
    InFlightSummary,
    OutputSeen,
    RateBucket,
    RequestSummary,
    StoredEvent,
    check_prune_args,
    merge_drift_events,
    payload_rows,
    rate_bucket_params,
)
from langchain_seedlock._store._memory import (
    AckedIds,
    Batch,
    Sketched,
    sketches_of,
    unique_records,
)
from langchain_seedlock._store._schema import (
    SCHEMA_VERSION,
    SKETCH_KEY_NAME,
    SQLITE,
    Queries,
    fingerprint_key,
    migration,
)

_T = TypeVar("_T")
# Seconds a fork waits for this store's SQLite calls in flight to end.
FORK_WAIT = 2.0

# SQLite only (see `_schema`): record ids go in one at a time (no arrays),
# their rowcount telling whether each was new.
INSERT_RECORD_ID = (
    "INSERT INTO record_ids (record_id, at) VALUES (?, ?) ON CONFLICT (record_id) DO NOTHING"
)
FORGET_RECORD_ID = "DELETE FROM record_ids WHERE record_id = ?"


def _json_get(key: str, kind: str) -> str:
    """An event field in SQL (see `Queries.drift_events`); JSON false reads as 0."""
    value = f"json_extract(fields, '$.\"{key}\"')"
    return f"(CASE WHEN {value} = 0 THEN 1 ELSE 0 END)" if kind == "false" else value


def dump_fields(fields: Any) -> str:
    """Event fields as JSON; anything not JSON-native is stored as its ``str``."""
    return json.dumps(dict(fields), default=str, sort_keys=True, allow_nan=True)


# Options a sqlite:/// URL may carry in its query string, as SQLite's own URIs
# spell them: ?mode=ro (read-only), ?mode=rw (read-write, must exist),
# ?mode=rwc (read-write, created if missing: the default).
URL_MODES: Final = {"ro": {"read_only": True}, "rw": {"create": False}, "rwc": {}}


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    return _parse_url(url)[0]


def _parse_url(url: str) -> tuple[Path, dict[str, Any]]:
    """The path of a ``sqlite:///`` URL and the options of its query string."""
    shown = redact_url(url)
    if not url.lower().startswith("sqlite:///"):
        raise StoreError(
            f"SQLite store URL must look like sqlite:///relative.db or "
            f"sqlite:////absolute.db (got {shown!r})"
        )
    raw, _, query = url[len("sqlite:///") :].partition("?")
    if not raw:
        raise StoreError(f"SQLite store URL has no path: {shown!r}")
    if raw == ":memory:" or raw.startswith("file:"):
        raise StoreError(
            f"SQLite store URL {shown!r}: in-memory and file: URIs are not supported "
            "(the store opens one connection per thread, and an in-memory SQLite "
            "database is private to one connection); use memory:// for a store in "
            "this process's memory, or sqlite:///path.db for a file"
        )
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "mode" or value not in URL_MODES:
            given = f"mode={value!r}" if key == "mode" else repr(key)  # a value may be secret
            raise StoreError(
                f"SQLite store URL {shown!r}: unknown option {given} in its query string; "
                "supported: mode=ro (read-only), mode=rw (must exist), mode=rwc (the default)"
            )
        options.update(URL_MODES[value])
    return Path(os.path.expanduser(raw)), options


class SQLiteStore(BaselineStore):
    """A store in one SQLite file, safe for many threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        read_only: bool = False,
        create: bool = True,
        url: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.url = redact_url(url or "sqlite:///" + self.path.as_posix())
        owner = "SQLite store"
        busy = check_number(owner, "busy_timeout", busy_timeout, minimum=0, maximum=86_400)
        assert busy is not None
        self.busy_timeout = busy
        self.read_only = check_bool(owner, "read_only", read_only)
        self.create = check_bool(owner, "create", create)
        self._local = threading.local()
        self._conns: list[tuple[sqlite3.Connection, int]] = []  # (connection, its thread)
        self._conns_lock = threading.Lock()
        # Threads inside a SQLite call (ident -> depth): a fork waits for
        # them, and the child keeps their connections open, unused.
        self._gate = threading.Condition(threading.Lock())
        self._busy: dict[int, int] = {}
        self._closed = False
        self._inode: int | None = None
        self._acked = AckedIds()
        self._sketched = Sketched()
        self._q = Queries(SQLITE)
        _fork.register(
            self,
            before=SQLiteStore._before_fork,
            after_in_parent=SQLiteStore._after_fork_in_parent,
            after_in_child=SQLiteStore._after_fork_in_child,
        )
        self._open()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Open the store named by a ``sqlite:///`` URL (``?mode=ro|rw|rwc`` honoured)."""
        path, from_query = _parse_url(url)
        for name, value in from_query.items():
            if name in options and options[name] != value:
                raise StoreError(
                    f"SQLite store URL {redact_url(url)!r}: its query string sets "
                    f"{name}={value!r} but the option {name}={options[name]!r} was given"
                )
        return cls(path, url=url, **{**options, **from_query})

    # -- connections -----------------------------------------------------------
    def _error(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(f"SQLite store {str(self.path)!r}: {action} failed: {exc}")

    def _open(self) -> None:
        if self.path.is_dir():
            raise StoreError(
                f"SQLite store {str(self.path)!r} is a directory; name a file in it "
                f"(e.g. sqlite:///{(self.path / 'baselines.db').as_posix()})"
            )
        if self.read_only or not self.create:
            if not self.path.exists():
                how = "read-only" if self.read_only else "without creating it (mode=rw)"
                raise StoreError(
                    f"SQLite store {str(self.path)!r} does not exist (opened {how}); check the path"
                )
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error("creating its directory", exc) from exc
        try:
            with self._in_sqlite():
                conn = self._conn()
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise self._version_error(version)
                if version < SCHEMA_VERSION and not self.read_only:
                    self._migrate(conn)
                    version = SCHEMA_VERSION
                # A read-only store may be older: it lacks what came later.
                self._q = Queries(SQLITE, version)
            self._inode = os.stat(self.path).st_ino
        except StoreError:
            self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise self._error("opening", exc) from exc

    def _version_error(self, version: int) -> StoreVersionError:
        return StoreVersionError(
            f"SQLite store {str(self.path)!r} has schema version {version}, newer than "
            f"{SCHEMA_VERSION} which this langchain-seedlock understands: upgrade "
            "langchain-seedlock, or point SEEDLOCK_STORE at another file."
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE takes the write lock first, so two processes opening a new
        # file at once migrate one after the other; the version is re-read
        # inside the transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._version_error(version)
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in migration(SQLITE, v):
                    conn.execute(stmt)
            if version < 3:
                conn.execute(self._q.insert_sketch_key, (SKETCH_KEY_NAME, new_key()))
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"SQLite store {str(self.path)!r} is closed")
        if self.read_only:
            target, uri = f"{self.path.resolve().as_uri()}?mode=ro", True
        elif not self.create:  # never create it, even if it vanished since _open
            target, uri = f"{self.path.resolve().as_uri()}?mode=rw", True
        else:
            target, uri = str(self.path), False
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE).
        conn = sqlite3.connect(
            target,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"SQLite store {str(self.path)!r}: cannot switch to WAL mode "
                        f"(journal_mode is {mode!r}); is the file on a network filesystem?"
                    )
            conn.execute("PRAGMA synchronous = NORMAL")
            # Force SQLite to read the header now: a non-SQLite file fails here.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append((conn, threading.get_ident()))
        return conn

    def _check_file(self) -> None:
        # An open SQLite connection keeps writing to a deleted (unlinked) file
        # without any error: every write would vanish. Check it is still there.
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            raise StoreError(
                f"SQLite store {str(self.path)!r} was deleted while open; "
                "reopen the store to start a new one"
            ) from None
        if self._inode is not None and inode != self._inode:
            raise StoreError(f"SQLite store {str(self.path)!r} was replaced while open; reopen it")

    def _run(self, action: str, fn: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        if write and self.read_only:
            raise StoreError(f"SQLite store {str(self.path)!r} was opened read-only")
        self._check_file()
        with self._in_sqlite():
            conn = self._conn()
            return self._run_on(conn, fn, action, write=write)

    def _run_on(
        self,
        conn: sqlite3.Connection,
        fn: Callable[[sqlite3.Connection], _T],
        action: str,
        *,
        write: bool,
    ) -> _T:
        # busy_timeout covers lock waits; this loop covers the rare SQLITE_BUSY
        # the busy handler cannot retry (e.g. a WAL checkpoint race), so that
        # "database is locked" never reaches the caller while the lock is
        # merely contended.
        deadline = time.monotonic() + max(self.busy_timeout, 0.1)
        delay = 0.005
        while True:
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
                return fn(conn)
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if ("locked" in msg or "busy" in msg) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                raise self._error(action, exc) from exc
            except sqlite3.Error as exc:
                raise self._error(action, exc) from exc

    # -- reads -----------------------------------------------------------------
    def outputs_for(self, request_hash: str) -> list[OutputSeen]:
        def q(c: sqlite3.Connection) -> list[OutputSeen]:
            return [OutputSeen(*r) for r in c.execute(self._q.outputs, (request_hash,))]

        return self._run("reading outputs", q, write=False)

    def request_payload(self, request_hash: str) -> str | None:
        if not self._q.has_payloads:
            return None  # a read-only store older than version 5

        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute(self._q.payload, (request_hash,)).fetchone()
            return None if row is None else str(row[0])

        return self._run("reading a payload", q, write=False)

    def payload_hashes(self) -> list[str]:
        if not self._q.has_payloads:
            return []

        def q(c: sqlite3.Connection) -> list[str]:
            return [str(r[0]) for r in c.execute(self._q.payload_hashes)]

        return self._run("reading payloads", q, write=False)

    def fingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        def q(c: sqlite3.Connection) -> list[FingerprintSeen]:
            return [FingerprintSeen(*r) for r in c.execute(self._q.fingerprints, (model_key,))]

        return self._run("reading fingerprints", q, write=False)

    def requests(self, *, model_key: str | None = None, limit: int = 100) -> list[RequestSummary]:
        def q(c: sqlite3.Connection) -> list[RequestSummary]:
            rows = c.execute(self._q.requests, (model_key, model_key, max(limit, 0)))
            return [RequestSummary(*r) for r in rows]

        return self._run("reading requests", q, write=False)

    def backends(self, *, model_key: str | None = None) -> list[BackendSummary]:
        def q(c: sqlite3.Connection) -> list[BackendSummary]:
            return [BackendSummary(*r) for r in c.execute(self._q.backends, (model_key, model_key))]

        return self._run("reading backends", q, write=False)

    def in_flight(self, *, model_key: str | None = None) -> list[InFlightSummary]:
        if not self._q.has_inflight:
            return []

        def q(c: sqlite3.Connection) -> list[InFlightSummary]:
            rows = c.execute(self._q.in_flight, (model_key, model_key))
            return [InFlightSummary(*r) for r in rows]

        return self._run("reading in-flight counts", q, write=False)

    def rate_buckets(self, width: float, *, model_key: str | None = None) -> list[RateBucket]:
        params = rate_bucket_params(width, model_key)

        def q(c: sqlite3.Connection) -> list[RateBucket]:
            rows = c.execute(self._q.rate_buckets, params)
            return [RateBucket(m, bid, b * width, *rest) for m, bid, b, *rest in rows]

        return self._run("reading rates over time", q, write=False)

    def drifting_requests(
        self, *, model_key: str | None = None, limit: int = 25
    ) -> list[DriftingRequest]:
        def q(c: sqlite3.Connection) -> list[DriftingRequest]:
            rows = c.execute(self._q.drifting, (model_key, model_key, max(limit, 0)))
            found = [DriftingRequest(*r) for r in rows]
            if not found:
                return found
            events_sql = self._q.drift_events(_json_get, len(found))
            rows = c.execute(events_sql, (OUTPUT_DRIFT, *(r.request_hash for r in found)))
            return merge_drift_events(found, rows.fetchall())

        return self._run("reading drifting requests", q, write=False)

    def event_counts(self) -> list[EventCount]:
        def q(c: sqlite3.Connection) -> list[EventCount]:
            return [EventCount(*r) for r in c.execute(self._q.event_counts)]

        return self._run("counting events", q, write=False)

    def recent_events(self, *, limit: int = 500) -> list[StoredEvent]:
        def q(c: sqlite3.Connection) -> list[StoredEvent]:
            rows = c.execute(self._q.recent_events, (max(limit, 0),)).fetchall()
            return [StoredEvent(n, at, json.loads(f), None) for n, at, f in rows]

        return self._run("reading events", q, write=False)

    def models(self) -> list[FingerprintSeen]:
        def q(c: sqlite3.Connection) -> list[FingerprintSeen]:
            return [FingerprintSeen(*r) for r in c.execute(self._q.models)]

        return self._run("reading models", q, write=False)

    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        def q(c: sqlite3.Connection) -> list[StoredEvent]:
            rows = c.execute(self._q.events, (name, name, since, since, max(limit, 0))).fetchall()
            return [StoredEvent(n, at, json.loads(f), None) for n, at, f in rows]

        return self._run("reading events", q, write=False)

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
        unique = unique_records(records)
        rows = [(e.name, e.at, dump_fields(e.fields), e.event_id) for e in events]
        # Before the transaction: sketching is not worth holding the write lock.
        sketches = sketches_of(unique, self.sketch_key() if unique else None, self._sketched)
        forget = self._acked.take()

        def w(c: sqlite3.Connection) -> None:
            if forget:
                c.executemany(FORGET_RECORD_ID, [(i,) for i in forget])
            # A record with an id counts only if its id is new: else an earlier
            # try of this same batch committed it.
            fresh = [
                r for r in unique
                if r.record_id is None or c.execute(INSERT_RECORD_ID, (r.record_id, r.at)).rowcount
            ]  # fmt: skip
            batch = Batch.of(fresh, capture_content=capture_content, sketches=sketches)
            c.executemany(self._q.upsert_output, [
                (rh, bid, oh, d.model_key, d.system_fingerprint, d.count, d.first_seen,
                 d.last_seen, d.output_text, d.sketch)
                for (rh, bid, oh), d in batch.outputs.items()
            ])  # fmt: skip
            c.executemany(self._q.upsert_fingerprint, [
                (mk, fingerprint_key(fp), fp, d.count, d.first_seen, d.last_seen, d.identity)
                for (mk, fp), d in batch.fingerprints.items()
            ])  # fmt: skip
            c.executemany(self._q.upsert_inflight, [(*k, *v) for k, v in batch.inflight.items()])
            c.executemany(self._q.insert_payload, payload_rows(fresh, capture_content))
            c.executemany(self._q.insert_event, rows)

        try:
            self._run("writing", w, write=True)
        except BaseException:
            self._acked.put_back(forget)
            raise
        self._sketched.add(sketches)

    def acknowledge(self, records: Sequence[CallRecord]) -> None:
        self._acked.add(records)

    def sketch_key(self) -> bytes | None:
        """The store's sketch key, from its ``meta`` table (read once)."""
        if self._sketch_key is None:

            def q(c: sqlite3.Connection) -> bytes | None:
                row = c.execute(self._q.sketch_key, (SKETCH_KEY_NAME,)).fetchone()
                return None if row is None else bytes(row[0])

            try:
                self._sketch_key = self._run("reading the sketch key", q, write=False)
            except StoreError:
                if not self.read_only:
                    raise
                return None  # a read-only store older than version 3
        return self._sketch_key

    def prune(self, *, older_than: float | None = None, keep_last: int | None = None) -> int:
        check_prune_args(older_than, keep_last)

        def w(c: sqlite3.Connection) -> int:
            deleted = 0
            if older_than is not None:
                for sql in self._q.prune_older:
                    deleted += c.execute(sql, (older_than,)).rowcount
                c.execute(self._q.prune_record_ids, (older_than,))
            if keep_last is not None:
                deleted += c.execute(self._q.keep_last, (max(keep_last, 0),)).rowcount
            return deleted + c.execute(self._q.prune_payloads).rowcount

        return self._run("pruning", w, write=True)

    # -- fork ------------------------------------------------------------------
    @contextmanager
    def _in_sqlite(self) -> Iterator[None]:
        """Count this thread as inside SQLite (see the module docstring)."""
        me = threading.get_ident()
        with self._gate:
            self._busy[me] = self._busy.get(me, 0) + 1
        try:
            yield
        finally:
            with self._gate:
                if self._busy[me] <= 1:
                    del self._busy[me]
                    self._gate.notify_all()  # a fork may be waiting
                else:
                    self._busy[me] -= 1

    def _before_fork(self) -> None:
        # Held until after the fork: no thread starts a SQLite call meanwhile.
        self._gate.acquire()
        deadline = time.monotonic() + FORK_WAIT
        me = threading.get_ident()
        while any(ident != me for ident in self._busy):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._gate.wait(remaining)

    def _after_fork_in_parent(self) -> None:
        self._gate.release()

    def _after_fork_in_child(self) -> None:
        busy_threads = set(self._busy)
        inherited = self._conns
        self._sketched = Sketched()  # its lock may be held by a parent's thread
        self._gate = threading.Condition(threading.Lock())
        self._busy = {}
        self._conns = []
        self._conns_lock = threading.Lock()
        self._local = threading.local()
        for conn, owner in inherited:
            if owner in busy_threads:
                # Its thread (gone in the child) may hold the connection's mutex.
                _fork.keep_forever(conn)
                continue
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        self._closed = True
        with self._in_sqlite(), self._conns_lock:
            for conn, _ in self._conns:
                with contextlib.suppress(sqlite3.Error):  # closing is best effort
                    conn.close()
            self._conns.clear()
        self._local = threading.local()
