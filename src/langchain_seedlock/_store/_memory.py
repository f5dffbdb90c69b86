"""The in-memory store (``memory://``), and the batch aggregation the SQL stores share.

The memory store is the reference for the semantics the SQLite and PostgreSQL
stores implement: what a count, a first/last seen and a prune mean.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._inflight import BUCKET_LOW, bucket
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import redact_url
from langchain_seedlock._sketch import Sketcher
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
    summarize_backends,
    summarize_rate_buckets,
)

if TYPE_CHECKING:
    from langchain_seedlock._identity import BackendIdentity

OutputKey = tuple[str, str, str]  # request_hash, backend_id, output_hash
FingerprintKey = tuple[str, str | None]  # model_key, system_fingerprint


@dataclass(slots=True)
class OutputDelta:
    """What one batch adds to one (request, backend, output) row."""

    model_key: str
    system_fingerprint: str | None
    count: int
    first_seen: float
    last_seen: float
    output_text: str | None
    sketch: bytes | None = None


@dataclass(slots=True)
class FingerprintDelta:
    """What one batch adds to one (model, fingerprint) row."""

    count: int
    first_seen: float
    last_seen: float
    identity: str | None = None  # of the batch's last call (JSON)


InFlightKey = tuple[str, str, str]  # model_key, backend_id, bucket


def inflight_delta(records: Sequence[CallRecord]) -> dict[InFlightKey, list[int]]:
    """Per (model, backend, in-flight bucket): [lowest, calls, repeats, known]."""
    out: dict[InFlightKey, list[int]] = {}
    for rec in records:
        label = bucket(rec.in_flight)
        if label is None:
            continue
        row = out.setdefault((rec.model_key, rec.backend_id, label), [BUCKET_LOW[label], 0, 0, 0])
        row[1] += 1
        if rec.known is not None:
            row[2] += 1
            row[3] += rec.known
    return dict(sorted(out.items()))


def unique_records(records: Sequence[CallRecord]) -> list[CallRecord]:
    """``records`` without repeated ``record_id`` (the first one is kept; records
    without an id are all kept)."""
    seen: set[str] = set()
    out = []
    for rec in records:
        rid = rec.record_id
        if rid is not None:
            if rid in seen:
                continue
            seen.add(rid)
        out.append(rec)
    return out


def unique_events(
    events: Sequence[StoredEvent], stored: Callable[[str], bool]
) -> list[StoredEvent]:
    """``events`` less those whose id is repeated or ``stored(id)`` (None ids all pass)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.event_id is not None:
            if e.event_id in seen or stored(e.event_id):
                continue
            seen.add(e.event_id)
        out.append(e)
    return out


class AckedIds:
    """Ids of acknowledged records that a SQL store has yet to forget.

    `BaselineStore.acknowledge` only queues them; the store's next write
    deletes them in its own transaction (no round trip of their own), and
    puts them back here if that write fails.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []

    def add(self, records: Sequence[CallRecord]) -> None:
        ids = [r.record_id for r in records if r.record_id is not None]
        if ids:
            with self._lock:
                self._ids.extend(ids)

    def take(self) -> list[str]:
        with self._lock:
            ids, self._ids = self._ids, []
        return ids

    def put_back(self, ids: list[str]) -> None:
        if ids:
            with self._lock:
                self._ids.extend(ids)


class Sketched:
    """The outputs a store instance has written a sketch for (the most recent
    `SKETCHED_KEPT`): a repeat of a known output is not sketched again (the
    upsert keeps the first sketch anyway)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: OrderedDict[OutputKey, None] = OrderedDict()

    def __contains__(self, key: OutputKey) -> bool:
        return key in self._keys

    def add(self, keys: Iterable[OutputKey]) -> None:
        """After the write that stored them succeeded."""
        with self._lock:
            for key in keys:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > SKETCHED_KEPT:
                self._keys.popitem(last=False)


SKETCHED_KEPT = 65_536


def sketches_of(
    records: Sequence[CallRecord], key: bytes | None, done: Sketched | None = None
) -> dict[OutputKey, bytes]:
    """The sketch of each distinct output of ``records`` with a text in memory
    and not in ``done`` (made before a write's transaction: ~0.1 ms each)."""
    if key is None:
        return {}
    sketcher = _sketcher(key)
    out: dict[OutputKey, bytes] = {}
    for rec in records:
        okey = (rec.request_hash, rec.backend_id, rec.output_hash)
        if rec.output_text is not None and okey not in out and (done is None or okey not in done):
            out[okey] = sketcher.sketch(rec.output_text)
    return out


_SKETCHERS: dict[bytes, Sketcher] = {}


def _sketcher(key: bytes) -> Sketcher:
    # One per key: its word-hash cache is what makes a sketch cheap.
    sketcher = _SKETCHERS.get(key)
    if sketcher is None:
        if len(_SKETCHERS) > 16:
            _SKETCHERS.clear()
        sketcher = _SKETCHERS[key] = Sketcher(key)
    return sketcher


@dataclass(slots=True)
class Batch:
    """A batch of records folded into one delta per row.

    Folding first means one upsert per distinct row, so a batch of 500 calls
    to the same request costs one statement, and rows are visited in sorted
    order: concurrent writers then lock rows in the same order and cannot
    deadlock each other (PostgreSQL).
    """

    outputs: dict[OutputKey, OutputDelta]
    fingerprints: dict[FingerprintKey, FingerprintDelta]
    inflight: dict[InFlightKey, list[int]]

    @classmethod
    def of(
        cls,
        records: Sequence[CallRecord],
        *,
        capture_content: bool,
        sketches: Mapping[OutputKey, bytes] | None = None,
    ) -> Batch:
        outputs: dict[OutputKey, OutputDelta] = {}
        fingerprints: dict[FingerprintKey, FingerprintDelta] = {}
        identities: dict[FingerprintKey, BackendIdentity | None] = {}  # the latest per key
        for rec in records:
            text = rec.output_text if capture_content else None
            okey = (rec.request_hash, rec.backend_id, rec.output_hash)
            o = outputs.get(okey)
            if o is None:
                outputs[okey] = OutputDelta(
                    rec.model_key, rec.system_fingerprint, 1, rec.at, rec.at, text,
                    sketches.get(okey) if sketches else None,
                )  # fmt: skip
            else:
                o.count += 1
                o.first_seen = min(o.first_seen, rec.at)
                o.last_seen = max(o.last_seen, rec.at)
                o.output_text = o.output_text if o.output_text is not None else text
            fkey = (rec.model_key, rec.system_fingerprint)
            f = fingerprints.get(fkey)
            if f is None:
                fingerprints[fkey] = FingerprintDelta(1, rec.at, rec.at, None)
                identities[fkey] = rec.identity
            else:
                f.count += 1
                f.first_seen = min(f.first_seen, rec.at)
                if rec.at >= f.last_seen:
                    identities[fkey] = rec.identity or identities[fkey]
                f.last_seen = max(f.last_seen, rec.at)
        for fkey, identity in identities.items():  # serialized once per key, not per record
            if identity is not None:
                fingerprints[fkey].identity = identity.to_json()
        return cls(
            dict(sorted(outputs.items())),
            dict(sorted(fingerprints.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))),
            inflight_delta(records),
        )


class MemoryStore(BaselineStore):
    """A thread-safe store that lives as long as the process (tests, notebooks)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = redact_url(url)
        self._lock = threading.Lock()
        _fork.register(self, after_in_child=MemoryStore._after_fork_in_child)
        self._outputs: dict[OutputKey, OutputSeen] = {}
        self._output_models: dict[str, str] = {}  # request_hash -> model_key
        self._fingerprints: dict[FingerprintKey, FingerprintSeen] = {}
        self._inflight: dict[InFlightKey, list[int]] = {}
        self._events: list[StoredEvent] = []
        self._payloads: dict[str, tuple[str, float]] = {}  # request_hash -> (payload, first_seen)
        self._event_ids: set[str] = set()
        # Ids of records written and not acknowledged yet -> the record's time.
        self._held: dict[str, float] = {}

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    # -- reads ---------------------------------------------------------------
    def outputs_for(self, request_hash: str) -> list[OutputSeen]:
        with self._lock:
            rows = [o for k, o in self._outputs.items() if k[0] == request_hash]
        return sorted(rows, key=lambda o: (o.first_seen, o.backend_id, o.output_hash))

    def request_payload(self, request_hash: str) -> str | None:
        with self._lock:
            found = self._payloads.get(request_hash)
        return None if found is None else found[0]

    def payload_hashes(self) -> list[str]:
        with self._lock:
            return sorted(self._payloads, key=lambda rh: (self._payloads[rh][1], rh))

    def fingerprints_for(self, model_key: str) -> list[FingerprintSeen]:
        with self._lock:
            rows = [f for k, f in self._fingerprints.items() if k[0] == model_key]
        return sorted(rows, key=lambda f: (f.last_seen, f.first_seen))

    def requests(self, *, model_key: str | None = None, limit: int = 100) -> list[RequestSummary]:
        with self._lock:
            grouped: dict[str, list[OutputSeen]] = {}
            for (request_hash, _, _), o in self._outputs.items():
                grouped.setdefault(request_hash, []).append(o)
            models = dict(self._output_models)
        summaries = [
            RequestSummary(
                request_hash=rh,
                model_key=models.get(rh, "?"),
                calls=sum(o.count for o in rows),
                distinct_outputs=len({o.output_hash for o in rows}),
                distinct_backends=len({o.backend_id for o in rows}),
                first_seen=min(o.first_seen for o in rows),
                last_seen=max(o.last_seen for o in rows),
            )
            for rh, rows in grouped.items()
        ]
        if model_key is not None:
            summaries = [s for s in summaries if s.model_key == model_key]
        summaries.sort(key=lambda s: (s.last_seen, s.request_hash), reverse=True)
        return summaries[: max(limit, 0)]

    def backends(self, *, model_key: str | None = None) -> list[BackendSummary]:
        with self._lock:
            rows = list(self._outputs.values())
            models = dict(self._output_models)
        found = summarize_backends(rows, models)
        return [b for b in found if model_key is None or b.model_key == model_key]

    def in_flight(self, *, model_key: str | None = None) -> list[InFlightSummary]:
        sums: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for (mk, _, label), (low, calls, repeats, known) in self._inflight.items():
                if model_key is None or mk == model_key:
                    row = sums.setdefault((mk, label), [low, 0, 0, 0])
                    row[1] += calls
                    row[2] += repeats
                    row[3] += known
        ordered = sorted(sums.items(), key=lambda kv: (kv[0][0], kv[1][0]))
        return [InFlightSummary(mk, label, c, r, k) for (mk, label), (_, c, r, k) in ordered]

    def rate_buckets(self, width: float, *, model_key: str | None = None) -> list[RateBucket]:
        rate_bucket_params(width, model_key)  # checks the width
        with self._lock:
            rows = list(self._outputs.values())
            models = dict(self._output_models)
        found = summarize_rate_buckets(rows, models, width)
        return [b for b in found if model_key is None or b.model_key == model_key]

    def drifting_requests(
        self, *, model_key: str | None = None, limit: int = 25
    ) -> list[DriftingRequest]:
        summaries = [
            s for s in self.requests(model_key=model_key, limit=len(self._output_models))
            if s.distinct_outputs > 1
        ]  # fmt: skip
        summaries.sort(key=lambda s: (-s.distinct_outputs, -s.calls, s.request_hash))
        found = [
            DriftingRequest(
                s.request_hash,
                s.model_key,
                s.calls,
                s.distinct_outputs,
                s.distinct_backends,
                s.first_seen,
                s.last_seen,
            )
            for s in summaries[: max(limit, 0)]
        ]
        wanted = {r.request_hash for r in found}
        rows = []
        for e in self.events(name=ev.OUTPUT_DRIFT, limit=len(self._events)):
            f = e.fields
            if f.get(ev.K_REQUEST_HASH) in wanted:
                rows.append((
                    f[ev.K_REQUEST_HASH], f.get(ev.K_DIVERGENCE_AT), 1,
                    int(f.get(ev.K_EXPLAINED) is False),
                    f.get(ev.K_DIFF_CHAR), f.get(ev.K_DIFF_TOKEN),
                ))  # fmt: skip
        return merge_drift_events(found, rows)

    def event_counts(self) -> list[EventCount]:
        with self._lock:
            events = list(self._events)
        by_name: dict[str, list[float]] = {}
        for e in events:
            by_name.setdefault(e.name, []).append(e.at)
        counts = [EventCount(n, len(ats), min(ats), max(ats)) for n, ats in by_name.items()]
        return sorted(counts, key=lambda c: (-c.count, c.name))

    def recent_events(self, *, limit: int = 500) -> list[StoredEvent]:
        with self._lock:
            events = list(enumerate(self._events))
        events.sort(key=lambda ie: (ie[1].at, ie[0]), reverse=True)
        return [e for _, e in events[: max(limit, 0)]]

    def models(self) -> list[FingerprintSeen]:
        with self._lock:
            rows = list(self._fingerprints.values())
        return sorted(rows, key=lambda f: (f.model_key, f.first_seen, f.system_fingerprint or ""))

    def events(
        self, *, name: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        with self._lock:
            rows = [
                e
                for e in self._events
                if (name is None or e.name == name) and (since is None or e.at >= since)
            ]
        rows.sort(key=lambda e: e.at)  # stable: insertion order among equal times
        return rows[: max(limit, 0)]

    # -- writes --------------------------------------------------------------
    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        sketches = sketches_of(records, self.sketch_key())  # outside the lock
        with self._lock:
            fresh = [r for r in unique_records(records) if r.record_id not in self._held]
            for r in fresh:
                if r.record_id is not None:
                    self._held[r.record_id] = r.at
            batch = Batch.of(fresh, capture_content=capture_content, sketches=sketches)
            for (rh, bid, oh), d in batch.outputs.items():
                old = self._outputs.get((rh, bid, oh))
                if old is None:
                    new = OutputSeen(
                        rh, oh, bid, d.system_fingerprint, d.count, d.first_seen, d.last_seen,
                        d.output_text, d.sketch,
                    )  # fmt: skip
                else:
                    new = replace(
                        old,
                        count=old.count + d.count,
                        first_seen=min(old.first_seen, d.first_seen),
                        last_seen=max(old.last_seen, d.last_seen),
                        output_text=old.output_text if old.output_text is not None
                        else d.output_text,
                        sketch=old.sketch if old.sketch is not None else d.sketch,
                    )  # fmt: skip
                self._outputs[(rh, bid, oh)] = new
                self._output_models.setdefault(rh, d.model_key)
            for rh, payload, at in payload_rows(fresh, capture_content):
                self._payloads.setdefault(rh, (payload, at))
            for (mk, fp), fd in batch.fingerprints.items():
                fold = self._fingerprints.get((mk, fp))
                self._fingerprints[(mk, fp)] = (
                    FingerprintSeen(mk, fp, fd.count, fd.first_seen, fd.last_seen, fd.identity)
                    if fold is None
                    else replace(
                        fold,
                        count=fold.count + fd.count,
                        first_seen=min(fold.first_seen, fd.first_seen),
                        last_seen=max(fold.last_seen, fd.last_seen),
                        identity=(fd.identity or fold.identity)
                        if fd.last_seen >= fold.last_seen
                        else fold.identity,
                    )
                )
            for key, (low, calls, repeats, known) in batch.inflight.items():
                row = self._inflight.setdefault(key, [low, 0, 0, 0])
                row[1] += calls
                row[2] += repeats
                row[3] += known
            new_events = unique_events(events, self._event_ids.__contains__)
            self._events.extend(new_events)
            self._event_ids.update(e.event_id for e in new_events if e.event_id is not None)

    def acknowledge(self, records: Sequence[CallRecord]) -> None:
        with self._lock:
            for r in records:
                if r.record_id is not None:
                    self._held.pop(r.record_id, None)

    def prune(self, *, older_than: float | None = None, keep_last: int | None = None) -> int:
        check_prune_args(older_than, keep_last)
        deleted = 0
        with self._lock:
            if older_than is not None:
                for key in [k for k, o in self._outputs.items() if o.last_seen < older_than]:
                    del self._outputs[key]
                    deleted += 1
                before = len(self._events)
                self._events = [e for e in self._events if e.at >= older_than]
                deleted += before - len(self._events)
                self._event_ids = {e.event_id for e in self._events if e.event_id is not None}
                self._held = {k: at for k, at in self._held.items() if at >= older_than}
                deleted += self._prune_fingerprints(older_than)
            if keep_last is not None:
                last: dict[str, float] = {}
                for (rh, _, _), o in self._outputs.items():
                    last[rh] = max(last.get(rh, o.last_seen), o.last_seen)
                ranked = sorted(last, key=lambda rh: (last[rh], rh), reverse=True)
                doomed = set(ranked[max(keep_last, 0) :])
                for key in [k for k in self._outputs if k[0] in doomed]:
                    del self._outputs[key]
                    deleted += 1
            live = {k[0] for k in self._outputs}
            self._output_models = {k: v for k, v in self._output_models.items() if k in live}
            deleted += len(self._payloads)
            self._payloads = {k: v for k, v in self._payloads.items() if k in live}
            deleted -= len(self._payloads)
        return deleted

    def _prune_fingerprints(self, older_than: float) -> int:
        # The latest fingerprint of each model is kept whatever its age: it is
        # what the next call is compared with, and dropping it would turn the
        # next call into a "first seen" and hide a fingerprint change.
        latest: dict[str, FingerprintSeen] = {}
        for f in self._fingerprints.values():
            cur = latest.get(f.model_key)
            if cur is None or (f.last_seen, f.first_seen) > (cur.last_seen, cur.first_seen):
                latest[f.model_key] = f
        doomed = [
            k
            for k, f in self._fingerprints.items()
            if f.last_seen < older_than and latest[f.model_key] is not f
        ]
        for key in doomed:
            del self._fingerprints[key]
        return len(doomed)

    def close(self) -> None:
        """Nothing to release; the data stays readable after close."""
