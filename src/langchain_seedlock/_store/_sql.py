"""What the SQLite and PostgreSQL stores share, written once over `_schema`'s
rendered queries: every read, the write's shape (records counted once, then
the upserts), prune, and the sketch key.

Each store brings how it runs a read and a transaction on its connections,
how its record ids are kept (`SQLStore._count_once`), and how event fields
go in and come back (JSON text in SQLite, JSONB in PostgreSQL).
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from langchain_seedlock._events import OUTPUT_DRIFT
from langchain_seedlock._record import CallRecord
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
from langchain_seedlock._store._schema import SKETCH_KEY_NAME, Queries, fingerprint_key

_T = TypeVar("_T")


def write_statements(
    q: Queries,
    fresh: Sequence[CallRecord],
    event_rows: Sequence[Any],
    capture_content: bool,
    sketches: Mapping[tuple[str, str, str], bytes],
) -> list[tuple[str, list[Any]]]:
    """(statement, parameter rows) of a write's upserts and inserts, in order,
    for the records not counted yet (``fresh``)."""
    batch = Batch.of(fresh, capture_content=capture_content, sketches=sketches)
    return [
        (q.upsert_output, [
            (rh, bid, oh, d.model_key, d.system_fingerprint, d.count, d.first_seen,
             d.last_seen, d.output_text, d.sketch)
            for (rh, bid, oh), d in batch.outputs.items()
        ]),
        (q.upsert_fingerprint, [
            (mk, fingerprint_key(fp), fp, d.count, d.first_seen, d.last_seen, d.identity)
            for (mk, fp), d in batch.fingerprints.items()
        ]),
        (q.upsert_inflight, [(*k, *v) for k, v in batch.inflight.items()]),
        (q.insert_payload, payload_rows(fresh, capture_content)),
        (q.insert_event, list(event_rows)),
    ]  # fmt: skip


def _ints(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """PostgreSQL sums integers as numeric: back to int (SQLite's already are)."""
    return [[int(x) if isinstance(x, Decimal) else x for x in r] for r in rows]


class SQLStore(BaselineStore):
    """A store in a SQL database (`_schema`'s tables, one dialect)."""

    def __init__(
        self,
        queries: Queries,
        json_get: Callable[[str, str], str],
        load_fields: Callable[[Any], Mapping[str, Any]],
    ) -> None:
        self._q = queries
        self._json_get = json_get
        """The dialect's SQL for one event field (`Queries.drift_events`)."""
        self._load_fields = load_fields
        """Stored event fields -> the mapping `StoredEvent` holds."""
        self._acked = AckedIds()
        self._sketched = Sketched()

    @abstractmethod
    def _read(self, action: str, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)`` outside a transaction; failures as `StoreError`."""

    @abstractmethod
    def _transaction(self, action: str, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)`` in one write transaction; failures as `StoreError`."""

    @abstractmethod
    def _event_rows(self, events: Sequence[StoredEvent]) -> list[Any]:
        """The parameter rows of `Queries.insert_event`."""

    @abstractmethod
    def _count_once(
        self, cur: Any, records: Sequence[CallRecord], forget: Sequence[str]
    ) -> list[CallRecord]:
        """In the write's transaction: drop the ids to ``forget``, keep the
        ids of ``records`` and return those to count, the records without an
        id and those whose id is new (else an earlier try of the same batch
        committed them)."""

    def _all(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(action, lambda c: c.execute(sql, params).fetchall())

    # -- reads -----------------------------------------------------------------
    def outputs_for(self, request_hash: str) -> list[OutputSeen]:
        rows = self._all("reading outputs", self._q.outputs, (request_hash,))
        return [OutputSeen(*r) for r in rows]

    def request_payload(self, request_hash: str) -> str | None:
        if not self._q.has_payloads:
            return None  # a read-only store older than version 5
        rows = self._all("reading a payload", self._q.payload, (request_hash,))
        return str(rows[0][0]) if rows else None

    def payload_hashes(self) -> list[str]:
        if not self._q.has_payloads:
            return []
        return [str(r[0]) for r in self._all("reading payloads", self._q.payload_hashes)]

    def fingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        rows = self._all("reading fingerprints", self._q.fingerprints, (model_key,))
        return [FingerprintSeen(*r) for r in rows]

    def requests(self, *, model_key: str | None = None, limit: int = 100) -> list[RequestSummary]:
        params = (model_key, model_key, max(limit, 0))
        return [RequestSummary(*r) for r in self._all("reading requests", self._q.requests, params)]

    def backends(self, *, model_key: str | None = None) -> list[BackendSummary]:
        rows = self._all("reading backends", self._q.backends, (model_key, model_key))
        return [BackendSummary(*r) for r in _ints(rows)]

    def in_flight(self, *, model_key: str | None = None) -> list[InFlightSummary]:
        if not self._q.has_inflight:
            return []
        rows = self._all("reading in-flight counts", self._q.in_flight, (model_key, model_key))
        return [InFlightSummary(*r) for r in _ints(rows)]

    def rate_buckets(self, width: float, *, model_key: str | None = None) -> list[RateBucket]:
        params = rate_bucket_params(width, model_key)
        rows = self._all("reading rates over time", self._q.rate_buckets, params)
        return [RateBucket(m, bid, b * width, *rest) for m, bid, b, *rest in _ints(rows)]

    def drifting_requests(
        self, *, model_key: str | None = None, limit: int = 25
    ) -> list[DriftingRequest]:
        def q(c: Any) -> list[DriftingRequest]:
            rows = c.execute(self._q.drifting, (model_key, model_key, max(limit, 0))).fetchall()
            found = [DriftingRequest(*r) for r in _ints(rows)]
            if not found:
                return found
            sql = self._q.drift_events(self._json_get, len(found))
            events = c.execute(sql, (OUTPUT_DRIFT, *(r.request_hash for r in found))).fetchall()
            return merge_drift_events(found, events)

        return self._read("reading drifting requests", q)

    def event_counts(self) -> list[EventCount]:
        return [EventCount(*r) for r in self._all("counting events", self._q.event_counts)]

    def recent_events(self, *, limit: int = 500) -> list[StoredEvent]:
        rows = self._all("reading events", self._q.recent_events, (max(limit, 0),))
        return [StoredEvent(n, at, self._load_fields(f), None) for n, at, f in rows]

    def models(self) -> list[FingerprintSeen]:
        return [FingerprintSeen(*r) for r in self._all("reading models", self._q.models)]

    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        params = (name, name, since, since, max(limit, 0))
        rows = self._all("reading events", self._q.events, params)
        return [StoredEvent(n, at, self._load_fields(f), None) for n, at, f in rows]

    def sketch_key(self) -> bytes | None:
        """The store's sketch key, from its ``meta`` table (read once); None
        in a read-only store older than version 3."""
        if self._sketch_key is None and self._q.has_meta:
            rows = self._all("reading the sketch key", self._q.sketch_key, (SKETCH_KEY_NAME,))
            self._sketch_key = bytes(rows[0][0]) if rows else None
        return self._sketch_key

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
        event_rows = self._event_rows(events)
        # Before the transaction: sketching is not worth holding the write lock.
        sketches = sketches_of(unique, self.sketch_key() if unique else None, self._sketched)
        forget = self._acked.take()

        def w(c: Any) -> None:
            with contextlib.closing(c.cursor()) as cur:
                fresh = self._count_once(cur, unique, forget)
                for sql, rows in write_statements(
                    self._q, fresh, event_rows, capture_content, sketches
                ):
                    cur.executemany(sql, rows)

        try:
            self._transaction("writing", w)
        except BaseException:
            self._acked.put_back(forget)
            raise
        self._sketched.add(sketches)

    def acknowledge(self, records: Sequence[CallRecord]) -> None:
        self._acked.add(records)

    def prune(self, *, older_than: float | None = None, keep_last: int | None = None) -> int:
        check_prune_args(older_than, keep_last)
        q = self._q

        def w(c: Any) -> int:
            deleted = 0
            if older_than is not None:
                for sql in q.prune_older:
                    deleted += c.execute(sql, (older_than,)).rowcount
                c.execute(q.prune_record_ids, (older_than,))
            if keep_last is not None:
                deleted += c.execute(q.keep_last, (max(keep_last, 0),)).rowcount
            return deleted + int(c.execute(q.prune_payloads).rowcount)

        return self._transaction("pruning", w)
