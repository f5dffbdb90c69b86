"""`SeedLockCallbackHandler`: observe (and optionally enforce) every chat model run.

A translator: LangChain's callback arguments in, the core's record out
(`_observe.record_from_result`), handed to `DriftMonitor.observe`. A sync
handler: LangChain honours its ``raise_error`` in sync and async runs (an
async one in a sync run cannot stop a call); ``run_inline`` orders it with the
tracers, so the record reaches the run's metadata before they post it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, GenerationChunk, LLMResult
from langchain_core.runnables.config import var_child_runnable_config

from langchain_seedlock import _events as ev
from langchain_seedlock import _observe as core
from langchain_seedlock import _otel
from langchain_seedlock._args import check_bool, check_instance, check_int
from langchain_seedlock._body import effective_params
from langchain_seedlock._callback_runs import Run, RunTable
from langchain_seedlock._door import ObservingDoor
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import (
    InvalidArgumentError,
    LockViolationError,
    MalformedResponseError,
)
from langchain_seedlock._hashing import param_value, request_hash_from_messages
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._store._base import BaselineStore

_SOURCE = "SeedLockCallbackHandler"


class SeedLockCallbackHandler(ObservingDoor, BaseCallbackHandler):
    """Record, compare and (optionally) enforce the seed of every chat model run.

    Attach it through ``config={"callbacks": [handler]}``: it sees every chat
    model run inside, locked (`LockedChatOpenAI`, `lock_model`) or not.

    Setup:
        ```python
        from langchain_seedlock import SeedLockCallbackHandler, open_store

        handler = SeedLockCallbackHandler(store=open_store("sqlite:///baselines.db"))
        chain.invoke({"topic": "Mars"}, config={"callbacks": [handler]})
        ```

    Enforce a lock on every model of a chain (refused before anything is sent):
        ```python
        handler = SeedLockCallbackHandler(lock=SeedLock(seed=7), enforce=True)
        chain.invoke(inputs, config={"callbacks": [handler]})  # LockViolationError if unseeded
        ```

    Args:
        store: a `BaselineStore`, a store URL, or None (this process's memory).
        lock: the lock calls are checked against.
        enforce: with ``lock``, refuse (raise `LockViolationError`) a call that
            has no seed or differs from the lock; without, log
            ``seedlock.unseeded_call`` / ``seedlock.lock_violation``.
        capture_content: put prompt and output text in events and the store, and
            each request's payload (messages, tools, parameters; never headers or
            keys), which `seedlock verify --recorded` re-sends.
        monitor: a `DriftMonitor` to share (then it owns store and capture_content).
        max_runs: runs remembered between start and end (older are dropped).
        metadata_keys: run metadata keys copied into every event of the call
            (and the stored drift events), e.g. ``("tenant", "user_id")``; none
            by default (metadata may hold personal data). Always copied:
            ``seedlock_label``, ``thread_id`` and the ``langgraph_*`` keys.
        include_tags: put the run's tags in every event, under ``tags``.
        otel: export each call's record and verdict to OpenTelemetry (docs/otel.md):
            True, a `SeedLockOTel`, or None to follow ``SEEDLOCK_OTEL``.
    """

    run_inline = True  # see the module docstring: ordered with the tracers

    def __init__(
        self,
        store: BaselineStore | str | None = None,
        *,
        lock: SeedLock | None = None,
        enforce: bool = False,
        capture_content: bool = False,
        monitor: DriftMonitor | None = None,
        max_runs: int = 10_000,
        metadata_keys: Sequence[str] = (),
        include_tags: bool = False,
        otel: bool | _otel.SeedLockOTel | None = None,
    ) -> None:
        super().__init__()
        # Every argument checked before anything is opened or started.
        if lock is not None:
            check_instance(_SOURCE, "lock", lock, SeedLock, "a SeedLock")
        check_bool(_SOURCE, "enforce", enforce)
        check_int(_SOURCE, "max_runs", max_runs, minimum=1)
        if enforce and lock is None:
            raise InvalidArgumentError(
                _SOURCE, "enforce", enforce,
                "needs a lock: SeedLockCallbackHandler(lock=..., enforce=True)",
            )  # fmt: skip
        self._open(
            _SOURCE, store=store, monitor=monitor, capture_content=capture_content,
            metadata_keys=metadata_keys, include_tags=include_tags, otel=otel,
        )  # fmt: skip
        self.lock = lock
        self.enforce = enforce
        # Only an enforcing handler may stop a call; under SEEDLOCK_RAISE_INTERNAL_ERRORS=1
        # (tests) LangChain must also let the handler's own bugs through.
        self.raise_error = bool(enforce and lock is not None) or ev.raise_internal_errors()
        self._runs = RunTable(max_runs)

    def __repr__(self) -> str:
        monitor, lock, enforce = self.monitor, self.lock, self.enforce
        return f"SeedLockCallbackHandler(monitor={monitor!r}, lock={lock!r}, enforce={enforce})"

    # -- start -----------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the invocation params; check (or enforce) the lock."""
        try:
            params = effective_params(kwargs.get("invocation_params") or {})
            context = ev.call_context(
                metadata, tags, metadata_keys=self.metadata_keys, include_tags=self.include_tags
            )
            first = messages[0] if messages else ()
            run = Run(
                run_id, serialized, params, first, metadata, parent_run_id,
                var_child_runnable_config.get(),
                # generate() with several prompts gives all their runs one metadata
                # dict: then it is no run's own to add the record to.
                metadata_alone=kwargs.get("batch_size", 1) == 1, context=context,
            )  # fmt: skip
            self._check(run)
            run.enter_in_flight()
            run.otel = self._otel and self._otel.start(claim=run.metadata_alone)
            self._runs.add(run)
        except LockViolationError:
            raise
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error(f"{_SOURCE}.on_chat_model_start", exc)

    def _check(self, run: Run) -> None:
        """The lock against what the run will send: observed (a handler cannot
        change a request), or refused with ``enforce``."""
        if self.lock is None:
            if param_value(run.params, "seed") is None:
                self.monitor.report_unseeded(run.fields(), source=_SOURCE)
            return
        violations = core.check_observed(
            run.params, self.lock, enforce=self.enforce, source=_SOURCE
        )
        if violations:
            self.monitor.report_violations(
                run.fields(), violations, lock_hash=self.lock.lock_hash, source=_SOURCE
            )

    # -- streaming ---------------------------------------------------------------
    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Keep a streamed chunk's fingerprint (the merged message may lose it)."""
        if chunk is None:
            return
        try:
            self._runs.see_chunk(run_id, chunk)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error(f"{_SOURCE}.on_llm_new_token", exc)

    # -- end ---------------------------------------------------------------------
    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Build the call's record, compare it, add it to the run's metadata."""
        try:
            self._end(response, run_id, parent_run_id)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error(f"{_SOURCE}.on_llm_end", exc)

    def _end(self, response: LLMResult, run_id: UUID, parent_run_id: UUID | None) -> None:
        run, known = self._runs.pop(run_id, parent_run_id)
        generations = response.generations[0] if response.generations else []
        outputs = [g.message for g in generations if isinstance(g, ChatGeneration)]
        if not outputs:
            if known and not generations:  # a chat run with no choices: say so
                self.monitor.report_failure(
                    run.fields(),
                    MalformedResponseError("the model server answered with no choices"),
                )
            return  # else a text-completion LLM: nothing this package hashes
        record = core.record_from_result(
            provider=run.provider, request_model=run.model, outputs=outputs,
            sent=run.messages, params=run.params, lock=self.lock,
            llm_output=response.llm_output, generation_info=generations[0].generation_info,
            chunk_fingerprint=run.chunk_fingerprint, run_id=str(run_id),
            parent_run_id=run.parent,
            context=run.context, capture_content=self.capture_content, otel=run.otel,
            **run.backend_inputs(self.lock),
        )  # fmt: skip
        # Metadata first: the tracers after this handler post the run next.
        core.add_run_metadata(
            run_id,
            core.run_metadata(record),
            metadata=run.metadata if run.metadata_alone else None,
            tracers=core.tracers_of(run.config),
        )
        self.monitor.observe(record)

    # -- errors ------------------------------------------------------------------
    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Log ``seedlock.call_failed`` (a refused call included)."""
        try:
            run, _ = self._runs.pop(run_id, parent_run_id)
            run.failed(error)
            fields = run.fields()
            if run.messages:
                fields[ev.K_REQUEST_HASH] = request_hash_from_messages(
                    run.provider, run.messages, run.params
                )
            self.monitor.report_failure(fields, error)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error(f"{_SOURCE}.on_llm_error", exc)
