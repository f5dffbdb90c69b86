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
from dataclasses import dataclass, field, replace
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


def payload_rows(
    records: Sequence[CallRecord], capture_content: bool
) -> list[tuple[str, str, float]]:
    """(request hash, payload, time) of the records carrying a payload, one
    per request hash; none unless ``capture_content``."""
    if not capture_content:
        return []
    rows: dict[str, tuple[str, str, float]] = {}
    for r in records:
        if r.request_payload is not None and r.request_hash not in rows:
            rows[r.request_hash] = (r.request_hash, r.request_payload, r.at)
    return list(rows.values())


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


@dataclass(frozen=True, slots=True)
class RateBucket:
    """One (model, backend identity, time bucket) of ``seedlock report``.

    The store keeps counts per output, not a row per call, so a call's time is
    not known, only each output's first and last time. Two exact measures
    follow: the requests *first seen* under this backend in the bucket, with
    all their calls and the reproducibility rate of their repeat calls
    (whenever made); and the *outputs first seen* in the bucket, each beyond
    the first of its request a new variant that appeared then.
    """

    model_key: str
    backend_id: str
    start: float
    """Bucket start (epoch seconds); the bucket is ``[start, start + width)``."""
    requests: int
    calls: int
    repeat_calls: int
    known_repeats: int
    outputs: int
    """Distinct outputs first seen in the bucket (a request's first included)."""

    @property
    def reproducibility_rate(self) -> float | None:
        return self.known_repeats / self.repeat_calls if self.repeat_calls else None

    @property
    def new_variants(self) -> int:
        """Outputs first seen in the bucket that were not a request's first."""
        return self.outputs - self.requests


@dataclass(frozen=True, slots=True)
class DriftingRequest:
    """A request with more than one distinct output (``seedlock report``),
    with what its stored ``seedlock.output_drift`` events say about where the
    outputs part."""

    request_hash: str
    model_key: str
    calls: int
    distinct_outputs: int
    distinct_backends: int
    first_seen: float
    last_seen: float
    drift_events: int = 0
    unexplained_events: int = 0
    first_difference_char: int | None = None
    """Earliest character where a drifted output left the usual one (texts known)."""
    first_difference_token: int | None = None
    divergence_at: str | None = None
    """Earliest ``"[lo, hi)"`` range estimated from sketches (texts unknown)."""


@dataclass(frozen=True, slots=True)
class EventCount:
    """Stored events of one name (``seedlock report``)."""

    name: str
    count: int
    first_at: float
    last_at: float


def rate_bucket_params(width: float, model_key: str | None) -> tuple[Any, ...]:
    """The parameters of `_schema.Queries.rate_buckets` in order."""
    check_number("BaselineStore.rate_buckets", "width", width, minimum=1)
    return (width, model_key, model_key, width, model_key, model_key)


def summarize_rate_buckets(
    rows: Sequence[OutputSeen], model_keys: Mapping[str, str], width: float
) -> list[RateBucket]:
    """`_schema.Queries.rate_buckets` in Python, for the memory store."""
    per_request: dict[tuple[str, str, str], list[OutputSeen]] = {}
    for o in rows:
        key = (model_keys.get(o.request_hash, "?"), o.backend_id, o.request_hash)
        per_request.setdefault(key, []).append(o)
    sums: dict[tuple[str, str, int], list[int]] = {}
    for (model, backend, _), outs in per_request.items():
        n = sum(o.count for o in outs)
        cell = sums.setdefault(
            (model, backend, int(min(o.first_seen for o in outs) // width)), [0] * 5
        )
        for i, v in enumerate((1, n, n - 1, n - len(outs), 0)):
            cell[i] += v
        for o in outs:
            sums.setdefault((model, backend, int(o.first_seen // width)), [0] * 5)[4] += 1
    return [
        RateBucket(model, backend, b * width, *cell)
        for (model, backend, b), cell in sorted(sums.items())
    ]


def merge_drift_events(
    requests: Sequence[DriftingRequest],
    rows: Sequence[tuple[str, str | None, int, int, int | None, int | None]],
) -> list[DriftingRequest]:
    """Add to each request its drift events, read as rows of (request hash,
    divergence range, events, unexplained events, min char, min token), one
    per (request, range): the earliest position wins."""
    found: dict[str, dict[str, Any]] = {}
    for rh, div, n, unexplained, char, token in rows:
        f = found.setdefault(rh, {"drift_events": 0, "unexplained_events": 0})
        f["drift_events"] += int(n)
        f["unexplained_events"] += int(unexplained or 0)
        for key, value in (("first_difference_char", char), ("first_difference_token", token)):
            if value is not None and (f.get(key) is None or int(value) < f[key]):
                f[key] = int(value)
        if div is not None and (
            f.get("divergence_at") is None or _range_start(div) < _range_start(f["divergence_at"])
        ):
            f["divergence_at"] = div
    return [replace(r, **found.get(r.request_hash, {})) for r in requests]


def _range_start(label: str) -> float:
    """``"[64, 128)"`` -> 64 (an unreadable label sorts last)."""
    try:
        return float(label.strip("[(").split(",")[0])
    except ValueError:
        return float("inf")


def summarize_backends(
    rows: Sequence[OutputSeen], model_keys: Mapping[str, str]
) -> list[BackendSummary]:
    """`_schema.Queries.backends` in Python, for the memory store. ``model_keys``: the
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
    def rate_buckets(self, width: float, *, model_key: str | None = None) -> list[RateBucket]:
        """Per (model, backend identity, bucket of ``width`` seconds): the
        requests first seen then with their reproducibility, and the outputs
        first seen then (see `RateBucket`); aggregated where the data is."""

    @abstractmethod
    def drifting_requests(
        self, *, model_key: str | None = None, limit: int = 25
    ) -> list[DriftingRequest]:
        """Requests with more than one distinct output, most outputs first,
        with their drift events and earliest divergence."""

    @abstractmethod
    def event_counts(self) -> list[EventCount]:
        """Stored events per name, most frequent first."""

    @abstractmethod
    def recent_events(self, *, limit: int = 500) -> list[StoredEvent]:
        """The ``limit`` newest stored events, newest first."""

    @abstractmethod
    def models(self) -> list[FingerprintSeen]:
        """Every (model, fingerprint) pair seen."""

    @abstractmethod
    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        """Stored events, oldest first."""

    @abstractmethod
    def request_payload(self, request_hash: str) -> str | None:
        """The recorded payload of a request (JSON, `_payload`), or None when
        none was captured (``capture_content=True`` captures them)."""

    @abstractmethod
    def payload_hashes(self) -> list[str]:
        """The request hashes with a recorded payload, first recorded first."""

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
