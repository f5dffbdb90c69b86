"""The runs `SeedLockCallbackHandler` follows between their start and end:
what a run carries, and the bounded, thread-safe table that holds them."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork, _inflight
from langchain_seedlock import _observe as core
from langchain_seedlock._hashing import param_value
from langchain_seedlock._identity import declared_of, merge_declared, note_failure, prefetch
from langchain_seedlock._lock import SeedLock


@dataclass(slots=True)
class Run:
    """What the handler keeps of one run: references only; everything derived
    from them is computed at the end."""

    run_id: UUID
    serialized: Mapping[str, Any] | None
    params: Mapping[str, Any]  # invocation params, extra_body merged (`effective_params`)
    messages: Sequence[BaseMessage]
    metadata: dict[str, Any] | None
    parent_run_id: UUID | None
    config: Any = None  # the enclosing runnable's config: its tracers
    metadata_alone: bool = True
    chunk_fingerprint: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)  # `ev.call_context`, at the start
    in_flight: _inflight.Token | None = None  # counted in `_inflight` until it ends
    otel: Any = None  # the call's OpenTelemetry export (`_otel._Call`), when on

    @property
    def provider(self) -> str:
        meta = self.metadata or {}
        return str(
            meta.get("ls_provider") or self.params.get("_type") or _serialized_name(self.serialized)
        )

    @property
    def model(self) -> str | None:
        meta = self.metadata or {}
        model = (
            self.params.get("model") or self.params.get("model_name") or meta.get("ls_model_name")
        )
        return str(model) if model is not None else None

    def base_url(self) -> str | None:
        return _inflight.base_url_of(self.serialized or {})

    def enter_in_flight(self) -> None:
        """The call starts: count it in flight to its base URL (`_inflight`), and
        have the server describe itself meanwhile (`_identity.prefetch`)."""
        base_url = self.base_url()
        prefetch(base_url, self.model)
        self.in_flight = _inflight.enter(_inflight.key_for(base_url, self.provider))

    def backend_inputs(self, lock: SeedLock | None) -> dict[str, Any]:
        """What the record takes for the backend identity (`_identity`): where
        the call went, what the user declared (the lock's, then the model's),
        and the calls in flight when it started."""
        return {
            "base_url": self.base_url(),
            "declared": merge_declared(
                lock.backend if lock else (), declared_of(self.serialized or {})
            ),
            "in_flight": self.in_flight.count if self.in_flight else None,
        }

    def failed(self, error: BaseException) -> None:
        """The call raised: drop its OpenTelemetry export; tell the server's
        description it may be stale (`_identity.note_failure`)."""
        if self.otel is not None:
            self.otel.abandon()
        note_failure(self.base_url(), error)

    @property
    def parent(self) -> str | None:
        return None if self.parent_run_id is None else str(self.parent_run_id)

    def fields(self) -> dict[str, Any]:
        """The event fields of the run (before its response)."""
        return {
            ev.K_PROVIDER: self.provider,
            ev.K_REQUEST_MODEL: self.model,
            ev.K_SEED: param_value(self.params, "seed"),
            "run_id": str(self.run_id),
            "parent_run_id": self.parent,
            **self.context,
        }


class RunTable:
    """Runs by id, at most ``max_runs`` (the oldest are dropped first)."""

    def __init__(self, max_runs: int) -> None:
        self._max_runs = max_runs
        self._runs: dict[UUID, Run] = {}  # insertion order: oldest first
        self._lock = threading.Lock()
        _fork.register(self, after_in_child=RunTable._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def add(self, run: Run) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            if len(self._runs) > self._max_runs:
                _inflight.leave(self._runs.pop(next(iter(self._runs))).in_flight)

    def see_chunk(self, run_id: UUID, chunk: Any) -> None:
        """Keep a streamed chunk's fingerprint on its run."""
        run = self._runs.get(run_id)
        if run is None:
            return
        message = getattr(chunk, "message", None)
        fp = core.first_present(
            (chunk.generation_info or {}).get(core.META_FINGERPRINT),
            (getattr(message, "response_metadata", None) or {}).get(core.META_FINGERPRINT),
        )
        if isinstance(fp, str):
            run.chunk_fingerprint = fp

    def pop(self, run_id: UUID, parent_run_id: UUID | None) -> tuple[Run, bool]:
        """The run, and whether it was known: a handler attached mid-run (or a
        run evicted) gets an empty one and records what the end tells."""
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is not None:
            _inflight.leave(run.in_flight)
        if run is None:
            return Run(run_id, None, {}, (), None, parent_run_id), False
        if run.parent_run_id is None:
            run.parent_run_id = parent_run_id
        return run, True

    def __len__(self) -> int:
        return len(self._runs)


def _serialized_name(serialized: Mapping[str, Any] | None) -> str:
    if not serialized:
        return "unknown"
    ids = serialized.get("id")
    if isinstance(ids, Sequence) and ids and not isinstance(ids, str):
        return str(ids[-1])
    return str(serialized.get("name") or "unknown")
