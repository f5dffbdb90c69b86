"""The baseline store interface shared by the memory, SQLite and PostgreSQL stores.

A store remembers, per request hash, each distinct output seen per backend
identity (counts, first/last seen); per model, each fingerprint seen; and the
drift events. Writes are batched upserts: counts stay exact whatever the
number of concurrent writers. Writes are idempotent for records and events
that carry an id (`BackgroundWriter` gives each one it submits a random id),
so a batch whose commit may or may not have happened (the connection died
after COMMIT) can be written again without counting twice. Reads are what
the drift monitor needs on a cache miss and what the ``seedlock drift``
command shows.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_seedlock._args import check_int, check_number
from langchain_seedlock._record import CallRecord
from langchain_seedlock._sketch import new_key


@dataclass(frozen=True, slots=True)
class OutputSeen:
    """One distinct output of one request under one backend identity."""

    request_hash: str
    output_hash: str
    backend_id: str
    system_fingerprint: str | None
    count: int
    first_seen: float
    last_seen: float
    output_text: str | None = None
    """Only stored when the monitor runs with ``capture_content=True``."""
    sketch: bytes | None = None
    """The output's sketch (`_sketch.Sketcher`, made with the store's
    `BaselineStore.sketch_key`): sizes a change without the text."""


@dataclass(frozen=True, slots=True)
class FingerprintSeen:
    """One fingerprint seen for one model (``provider:model``)."""

    model_key: str
    system_fingerprint: str | None
    count: int
    first_seen: float
    last_seen: float
    identity: str | None = None
    """The backend identity of the last call with this fingerprint, as JSON
    (`_identity.BackendIdentity.to_json`); None in rows from before version 4."""


@dataclass(frozen=True, slots=True)
class InFlightSummary:
    """Calls of one model by in-flight bucket (``seedlock drift``): how many
    calls to the same base URL were in flight when each started (`_inflight`)."""

    model_key: str
    bucket: str
    calls: int
    repeat_calls: int
    known_repeats: int

    @property
    def reproducibility_rate(self) -> float | None:
        return self.known_repeats / self.repeat_calls if self.repeat_calls else None


# One source for SQLite and PostgreSQL (``{t}``: the table, ``{p}``: the
# placeholder, ``{text}``: PostgreSQL's cast of a NULL text parameter).
# The report's query: per (model, bucket), aggregated in the database.
INFLIGHT_SQL = """
SELECT model_key, bucket, sum(calls), sum(repeat_calls), sum(known_repeats)
FROM {t}
WHERE ({p}{text} IS NULL OR model_key = {p}{text})
GROUP BY model_key, bucket
ORDER BY model_key, min(lowest)
"""
INFLIGHT_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    model_key TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    bucket TEXT NOT NULL,
    lowest INTEGER NOT NULL,
    calls BIGINT NOT NULL,
    repeat_calls BIGINT NOT NULL,
    known_repeats BIGINT NOT NULL,
    PRIMARY KEY (model_key, backend_id, bucket)
)
"""
"""Version 4 of both SQL schemas (one source: the dialects agree here).
``lowest``: the bucket's lowest count, to sort buckets in SQL."""
UPSERT_INFLIGHT = """
INSERT INTO {t} (model_key, backend_id, bucket, lowest, calls, repeat_calls, known_repeats)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (model_key, backend_id, bucket) DO UPDATE SET
    calls = {t}.calls + excluded.calls,
    repeat_calls = {t}.repeat_calls + excluded.repeat_calls,
    known_repeats = {t}.known_repeats + excluded.known_repeats
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A drift event as kept in the store (same fields as the log line)."""

    name: str
    at: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = field(default=None, compare=False)
    """Set by `BackgroundWriter` (like ``CallRecord.record_id``): a retried
    write stores the event once. None when read back."""


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What the store knows about one request hash (for ``seedlock drift``)."""

    request_hash: str
    model_key: str
    calls: int
    distinct_outputs: int
    distinct_backends: int
    first_seen: float
    last_seen: float


def check_prune_args(older_than: float | None, keep_last: int | None) -> None:
    """Refuse what would delete the wrong rows: ``keep_last=-1`` (SQL ``LIMIT 0``:
    everything), a bool, NaN or infinity."""
    owner = "BaselineStore.prune"
    check_number(owner, "older_than", older_than, allow_none=True)
    if keep_last is not None:
        check_int(owner, "keep_last", keep_last, minimum=0)


@dataclass(frozen=True, slots=True)
class BackendSummary:
    """What the store knows about one model under one backend identity
    (``seedlock drift``): computed from the output rows, so shared by every
    process writing to the store.

    Per request hash under this backend, with ``n`` calls and ``k`` distinct
    outputs: ``n - 1`` repeat calls, of which ``n - k`` gave an output already
    known (each distinct output is new once, the first call is the baseline).
    """

    model_key: str
    backend_id: str
    system_fingerprint: str | None
    requests: int
    calls: int
    repeat_calls: int
    known_repeats: int
    tarr_requests: int
    """Requests called at least twice under this backend."""
    tarr_identical: int
    """... of which every output was identical."""
    first_seen: float
    last_seen: float

    @property
    def reproducibility_rate(self) -> float | None:
        """Share of repeat calls that gave an already-known output."""
        return self.known_repeats / self.repeat_calls if self.repeat_calls else None

    @property
    def tarr(self) -> float | None:
        """TARr@N (Atil et al. 2024, arXiv 2408.04667): share of the requests
        called N >= 2 times whose outputs were all identical."""
        return self.tarr_identical / self.tarr_requests if self.tarr_requests else None


# One query for SQLite and PostgreSQL (``{outputs}``: the table; ``{p}``: the
# placeholder; ``{text}``: the cast a NULL text parameter needs in PostgreSQL).
# The aggregation runs in the database: one row per (model, backend) is read.
BACKENDS_SQL = """
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


def summarize_backends(
    rows: Sequence[OutputSeen], model_keys: Mapping[str, str]
) -> list[BackendSummary]:
    """`BACKENDS_SQL` in Python, for the memory store. ``model_keys``: the
    model key of each request hash."""
    per_request: dict[tuple[str, str, str], list[OutputSeen]] = {}
    for o in rows:
        key = (model_keys.get(o.request_hash, "?"), o.backend_id, o.request_hash)
        per_request.setdefault(key, []).append(o)
    groups: dict[tuple[str, str], list[list[OutputSeen]]] = {}
    for (model, backend, _), outs in per_request.items():
        groups.setdefault((model, backend), []).append(outs)
    out = []
    for (model, backend), requests in groups.items():
        ns = [(sum(o.count for o in outs), len(outs)) for outs in requests]
        fps = [o.system_fingerprint for outs in requests for o in outs if o.system_fingerprint]
        out.append(
            BackendSummary(
                model_key=model,
                backend_id=backend,
                system_fingerprint=max(fps) if fps else None,
                requests=len(requests),
                calls=sum(n for n, _ in ns),
                repeat_calls=sum(n - 1 for n, _ in ns),
                known_repeats=sum(n - k for n, k in ns),
                tarr_requests=sum(1 for n, _ in ns if n >= 2),
                tarr_identical=sum(1 for n, k in ns if n >= 2 and k == 1),
                first_seen=min(o.first_seen for outs in requests for o in outs),
                last_seen=max(o.last_seen for outs in requests for o in outs),
            )
        )
    out.sort(key=lambda b: (b.model_key, b.first_seen, b.backend_id))
    return out


class BaselineStore(ABC):
    """Where baselines live. Implementations: memory, SQLite, PostgreSQL.

    Every method may raise `StoreError` (or a driver error); callers in the
    observability path catch it and log ``seedlock.store_error``.
    """

    url: str
    """The store's URL with any password replaced by ``***``."""
    _sketch_key: bytes | None = None

    def sketch_key(self) -> bytes | None:
        """The key output sketches are made with: one per store, generated
        once and kept in it (never logged). None when the store cannot hold
        one (a read-only store made before sketches). The default, for stores
        that keep nothing across processes: a random key per instance."""
        if self._sketch_key is None:
            self._sketch_key = new_key()
        return self._sketch_key

    # -- reads ---------------------------------------------------------------
    @abstractmethod
    def outputs_for(self, request_hash: str) -> list[OutputSeen]:
        """Every output seen for a request, oldest first."""

    @abstractmethod
    def fingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        """Every fingerprint seen for a model, most recently seen last."""

    @abstractmethod
    def requests(self, *, model_key: str | None = None, limit: int = 100) -> list[RequestSummary]:
        """Request summaries, most recently seen first."""

    @abstractmethod
    def backends(self, *, model_key: str | None = None) -> list[BackendSummary]:
        """Per (model, backend identity): calls, repeat calls, reproducibility
        rate and TARr, aggregated where the data is (SQL in the databases)."""

    def in_flight(self, *, model_key: str | None = None) -> list[InFlightSummary]:
        """Per (model, in-flight bucket): calls, repeat calls and known repeats,
        buckets in increasing order. Stores without the counts return []."""
        return []

    @abstractmethod
    def models(self) -> list[FingerprintSeen]:
        """Every (model, fingerprint) pair seen."""

    @abstractmethod
    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        """Stored events, oldest first."""

    # -- writes --------------------------------------------------------------
    @abstractmethod
    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        """Upsert a batch of calls and append events, in one transaction.

        Each record adds 1 to the count of (request_hash, backend_id,
        output_hash) and of (model_key, fingerprint), and moves last_seen.
        Output text is stored only when ``capture_content`` is true.

        Idempotent until `acknowledge`: a record whose ``record_id`` the
        store already holds (a retry of a write that failed after it may
        have committed) adds nothing, and so does an event whose
        ``event_id`` is stored. Records and events without ids always count.
        """

    def acknowledge(self, records: Sequence[CallRecord]) -> None:
        """The caller saw ``write(records)`` succeed and will not write these
        records again: the store may forget their ids. Never raises.

        Stores keep the ``record_id`` of every record written until then, to
        recognise a retry; `BackgroundWriter` acknowledges each batch it
        wrote, so the ids kept stay about one batch per writer. Ids never
        acknowledged (a process killed mid-retry) go with
        ``prune(older_than=...)``. The default does nothing.
        """
        return

    @abstractmethod
    def prune(self, *, older_than: float | None = None, keep_last: int | None = None) -> int:
        """Delete outputs/events last seen before ``older_than`` (epoch seconds)
        and keep at most ``keep_last`` requests; return the rows deleted."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    # -- async twins: a thread by default; PostgreSQL has native ones ---------
    async def aoutputs_for(self, request_hash: str) -> list[OutputSeen]:
        return await asyncio.to_thread(self.outputs_for, request_hash)

    async def afingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        return await asyncio.to_thread(self.fingerprints_for, model_key)

    async def awrite(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        await asyncio.to_thread(self.write, records, events, capture_content=capture_content)

    def __enter__(self) -> BaselineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
