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


@dataclass(frozen=True, slots=True)
class FingerprintSeen:
    """One fingerprint seen for one model (``provider:model``)."""

    model_key: str
    system_fingerprint: str | None
    count: int
    first_seen: float
    last_seen: float


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


class BaselineStore(ABC):
    """Where baselines live. Implementations: memory, SQLite, PostgreSQL.

    Every method may raise `StoreError` (or a driver error); callers in the
    observability path catch it and log ``seedlock.store_error``.
    """

    url: str
    """The store's URL with any password replaced by ``***``."""

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
