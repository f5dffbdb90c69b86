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
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import redact_url
from langchain_seedlock._sketch import new_key
from langchain_seedlock._store._base import StoredEvent
from langchain_seedlock._store._memory import Sketched
from langchain_seedlock._store._schema import (
    SCHEMA_VERSION,
    SKETCH_KEY_NAME,
    SQLITE,
    Queries,
    migration,
)
from langchain_seedlock._store._sql import SQLStore

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


class SQLiteStore(SQLStore):
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
        super().__init__(Queries(SQLITE), _json_get, json.loads)
        self._local = threading.local()
        self._conns: list[tuple[sqlite3.Connection, int]] = []  # (connection, its thread)
        self._conns_lock = threading.Lock()
        # Threads inside a SQLite call (ident -> depth): a fork waits for
        # them, and the child keeps their connections open, unused.
        self._gate = threading.Condition(threading.Lock())
        self._busy: dict[int, int] = {}
        self._closed = False
        self._inode: int | None = None
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

    # -- what `SQLStore` asks of a dialect -----------------------------------
    def _read(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._run(action, fn, write=False)

    def _transaction(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._run(action, fn, write=True)

    def _event_rows(self, events: Sequence[StoredEvent]) -> list[Any]:
        return [(e.name, e.at, dump_fields(e.fields), e.event_id) for e in events]

    def _count_once(
        self, cur: sqlite3.Cursor, records: Sequence[CallRecord], forget: Sequence[str]
    ) -> list[CallRecord]:
        if forget:
            cur.executemany(FORGET_RECORD_ID, [(i,) for i in forget])
        return [
            r for r in records
            if r.record_id is None or cur.execute(INSERT_RECORD_ID, (r.record_id, r.at)).rowcount
        ]  # fmt: skip

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
