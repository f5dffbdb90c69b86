"""`SeedLockCallbackHandler`: observe (and optionally enforce) every chat model run.

A thin door onto the core: the lock check is `_enforce`, the comparison and
the events are `DriftMonitor`; this module only translates LangChain callback
arguments into a `CallRecord` and adds the record to the run's metadata.

Why a sync `BaseCallbackHandler` (not `AsyncCallbackHandler`): LangChain runs
a sync handler in sync runs and in async runs, and honours ``raise_error`` in
both; an async handler in a sync run is gathered after the fact in a fresh
event loop with its exceptions swallowed, so it could not stop a call.
``run_inline = True`` (as `LangChainTracer` has) keeps the handler in the
ordered group of async handlers: its ``on_llm_end`` runs, in list order,
before a tracer that comes after it posts the run, and its work is a few
microseconds (store writes happen on the monitor's writer thread).

Run metadata (what LangSmith and any LangChain tracer show): in ``on_llm_end``
the handler adds ``system_fingerprint``, ``gen_ai.request.seed``,
``seedlock.request_hash`` and ``seedlock.output_hash`` to the tracer's `Run`
for this run id, before the tracer's own ``on_llm_end`` posts it (handlers
run in list order; tracers enabled by environment variables are appended
after the callbacks you pass). Two paths reach that `Run`:

1. The ``metadata`` dict LangChain passes to ``on_chat_model_start`` is the
   very dict a `BaseTracer` keeps as ``run.extra["metadata"]``
   (`_TracerCore._create_chat_model_run`): updating it updates the run of
   the run collector, ``astream_events``, the console tracer and most
   custom tracers.
2. `LangChainTracer` replaces that dict with a copy when it posts the run
   start (``_patch_missing_metadata``), so the handler also looks the run up
   in the ``run_map`` of the tracers of the enclosing runnable's callback
   manager (``var_child_runnable_config``: every chain, graph node and agent
   step) and calls ``run.add_metadata``. A chat model invoked on its own,
   outside any runnable, has no enclosing manager: LangSmith then gets the
   keys only from a locked model, which stamps its own run (and always has
   the fingerprint in the run's outputs).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, get_buffer_string
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, GenerationChunk, LLMResult
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork, _inflight, _otel
from langchain_seedlock._args import (
    check_bool,
    check_instance,
    check_int,
    check_number,
    check_store,
)
from langchain_seedlock._body import effective_params
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._enforce import apply_policy, find_violations
from langchain_seedlock._errors import (
    InvalidArgumentError,
    LockViolationError,
    MalformedResponseError,
)
from langchain_seedlock._hashing import (
    normalize_params,
    output_hash,
    param_value,
    request_hash_from_messages,
)
from langchain_seedlock._identity import declared_of, merge_declared, prefetch
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._record import CallRecord, clean_fingerprint, is_complete, sampling_params
from langchain_seedlock._store._base import BaselineStore

# Keys this handler adds to a run's metadata (what tracers show).
RUN_META_FINGERPRINT = "system_fingerprint"
RUN_META_SEED = ev.K_SEED
RUN_META_REQUEST_HASH = ev.K_REQUEST_HASH
RUN_META_OUTPUT_HASH = ev.K_OUTPUT_HASH
RUN_META_LOCK_HASH = ev.K_LOCK_HASH

# Keys the locked models put into response_metadata / llm_output.
_LOCKED_REQUEST_HASH = "seedlock_request_hash"
_LOCKED_OUTPUT_HASH = "seedlock_output_hash"
_LOCKED_LOCK_HASH = "seedlock_lock_hash"
_FINGERPRINT = "system_fingerprint"
_SOURCE = "SeedLockCallbackHandler"


@dataclass(slots=True)
class _Run:
    """What the handler remembers between the start and the end of one run:
    references only; everything derived from them is computed at the end."""

    serialized: Mapping[str, Any] | None
    params: Mapping[str, Any]  # invocation params, extra_body merged (`effective_params`)
    messages: Sequence[BaseMessage]
    metadata: dict[str, Any] | None
    parent_run_id: UUID | None
    config: Any = None  # the enclosing runnable's config: its tracers
    metadata_alone: bool = True
    chunk_fingerprint: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)  # `ev.call_context`, at the start
    in_flight: _inflight.Token | None = None
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


def door_monitor(
    owner: str, store: Any, monitor: Any, capture_content: bool
) -> tuple[DriftMonitor, BaselineStore | None]:
    """The `DriftMonitor` of a door (this handler, `SeedLockMiddleware`) from its
    ``store=`` / ``monitor=`` arguments, checked here, and the store the door
    opened from a URL (the door closes it), if any. Call it after the door's
    other checks: it opens the store."""
    check_store(owner, "store", store, urls=True)
    if monitor is not None:
        check_instance(owner, "monitor", monitor, DriftMonitor, "a DriftMonitor")
        if store is not None:
            raise InvalidArgumentError(
                owner, "store", store,
                "cannot be given with monitor=: pass either store= or monitor= "
                "(the monitor owns its store)",
            )  # fmt: skip
        return monitor, None
    owned: BaselineStore | None = None
    if isinstance(store, str):
        from langchain_seedlock._store import open_store  # SQLite code on demand

        store = owned = open_store(store)
    return DriftMonitor(store, capture_content=capture_content), owned


class SeedLockCallbackHandler(BaseCallbackHandler):
    """Record, compare and (optionally) enforce the seed of every chat model run.

    Attach it to a chain, an agent or one model through
    ``config={"callbacks": [handler]}``; it sees every chat model run inside,
    locked (`LockedChatOpenAI`, `lock_model`) or not (a plain `ChatOpenAI`).

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
        store: a `BaselineStore`, a store URL (``"sqlite:///f.db"``), or None
            to keep baselines in this process's memory only.
        lock: the lock calls are checked against.
        enforce: with ``lock``, refuse (raise `LockViolationError`) a call that
            has no seed or differs from the lock; without, log
            ``seedlock.unseeded_call`` / ``seedlock.lock_violation``.
        capture_content: put prompt and output text in events and the store.
        monitor: a `DriftMonitor` to share with other handlers or middleware
            (then ``store`` and ``capture_content`` belong to it).
        max_runs: runs remembered between start and end (older are dropped).
        metadata_keys: run metadata keys copied into every event of the call
            (and the stored drift events), e.g. ``("tenant", "user_id")``;
            none by default, as metadata may hold personal data. Always
            copied: ``seedlock_label``, ``thread_id`` and the ``langgraph_*`` keys.
        include_tags: put the run's tags (``config={"tags": [...]}``) in every
            event of the call, as a list under ``tags``.
        otel: export each call's record and verdict to OpenTelemetry (the
            ``otel`` extra; see docs/otel.md): True, a `SeedLockOTel`, or
            None to follow the environment variable ``SEEDLOCK_OTEL``.
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
        owner = "SeedLockCallbackHandler"
        # Every argument checked here, before anything is opened or started.
        if lock is not None:
            check_instance(owner, "lock", lock, SeedLock, "a SeedLock")
        check_bool(owner, "enforce", enforce)
        check_bool(owner, "capture_content", capture_content)
        check_int(owner, "max_runs", max_runs, minimum=1)
        self.metadata_keys, self.include_tags = ev.check_context_options(
            owner, metadata_keys, include_tags
        )
        if enforce and lock is None:
            raise InvalidArgumentError(
                owner, "enforce", enforce,
                "needs a lock: SeedLockCallbackHandler(lock=..., enforce=True)",
            )  # fmt: skip
        otel_options = _otel.door_options(owner, otel)
        monitor, self._owned_store = door_monitor(owner, store, monitor, capture_content)
        self._otel = _otel.door_exporter(otel_options, monitor.capture_content)
        self.monitor = monitor
        self.lock = lock
        self.enforce = enforce
        self.capture_content = monitor.capture_content
        # Only an enforcing handler may stop a call; every other failure is
        # swallowed, except under SEEDLOCK_RAISE_INTERNAL_ERRORS=1 (tests), where
        # LangChain must let the handler's own bugs through instead of a warning.
        self.raise_error = bool(enforce and lock is not None) or ev.raise_internal_errors()
        self._enforce_lock = lock.replace(on_violation="raise") if lock is not None else None
        self._max_runs = max_runs
        self._runs: dict[UUID, _Run] = {}  # insertion order: oldest first
        self._lock = threading.Lock()
        _fork.register(self, after_in_child=SeedLockCallbackHandler._after_fork_in_child)

    def __repr__(self) -> str:
        return (
            f"SeedLockCallbackHandler(monitor={self.monitor!r}, lock={self.lock!r}, "
            f"enforce={self.enforce})"
        )

    # -- lifecycle helpers ---------------------------------------------------------
    def __enter__(self) -> SeedLockCallbackHandler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every observed call is in the store."""
        check_number(
            "SeedLockCallbackHandler.flush", "timeout", timeout, minimum=0, allow_none=True
        )
        return self.monitor.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the monitor's writer thread; close the store if the
        handler opened it from a URL. Returns False if records were left unwritten.

        Final (a closed handler is not reopened): a call it sees afterwards is
        still compared and logged, and reported as ``seedlock.store_error``
        instead of being stored. Close it at shutdown, or use it as a context
        manager (``with SeedLockCallbackHandler(store=url) as handler:``).
        """
        check_number(
            "SeedLockCallbackHandler.close", "timeout", timeout, minimum=0, allow_none=True
        )
        done = self.monitor.close(timeout)
        if self._owned_store is not None:
            self._owned_store.close()
        return done

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
            self._start(
                serialized, messages, run_id, parent_run_id,
                metadata=metadata, tags=tags, kwargs=kwargs,
            )  # fmt: skip
        except LockViolationError:
            raise
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockCallbackHandler.on_chat_model_start", exc)

    def _start(
        self,
        serialized: Mapping[str, Any] | None,
        messages: list[list[BaseMessage]],
        run_id: UUID,
        parent_run_id: UUID | None,
        *,
        metadata: dict[str, Any] | None,
        tags: Sequence[str] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        # As the server receives them: extra_body / model_kwargs entries included.
        params = effective_params(kwargs.get("invocation_params") or {})
        run = _Run(
            serialized,
            params,
            messages[0] if messages else (),
            metadata,
            parent_run_id,
            var_child_runnable_config.get(),
            # generate() with several prompts gives all their runs one metadata
            # dict: then it is no run's own to add the record to.
            metadata_alone=kwargs.get("batch_size", 1) == 1,
            context=ev.call_context(
                metadata, tags, metadata_keys=self.metadata_keys, include_tags=self.include_tags
            ),
        )
        if self.lock is not None:
            violations = find_violations(self.lock, params, require_all=True)
            if violations and self.enforce:
                assert self._enforce_lock is not None
                ordered = sorted(violations, key=lambda v: v.field != "seed")  # seed first
                apply_policy(self._enforce_lock, ordered, source=_SOURCE)
            elif violations:
                self.monitor.report_violations(
                    self._start_fields(run, run_id), violations,
                    lock_hash=self.lock.lock_hash, source=_SOURCE,
                )  # fmt: skip
        elif param_value(params, "seed") is None:
            self.monitor.report_unseeded(self._start_fields(run, run_id), source=_SOURCE)
        base_url = _inflight.base_url_of(serialized or {})
        prefetch(base_url, run.model)
        run.in_flight = _inflight.enter(_inflight.key_for(base_url, run.provider))
        if self._otel is not None:
            run.otel = self._otel.start(claim=run.metadata_alone)
        with self._lock:
            self._runs[run_id] = run
            if len(self._runs) > self._max_runs:
                _inflight.leave(self._runs.pop(next(iter(self._runs))).in_flight)

    def _start_fields(self, run: _Run, run_id: UUID) -> dict[str, Any]:
        fields: dict[str, Any] = {
            ev.K_PROVIDER: run.provider,
            ev.K_REQUEST_MODEL: run.model,
            ev.K_SEED: param_value(run.params, "seed"),
            "run_id": str(run_id),
            "parent_run_id": _str(run.parent_run_id),
        }
        fields.update(run.context)
        return fields

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.pop(run_id, None)

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
            fp = None
            info = getattr(chunk, "generation_info", None)
            if info:
                fp = info.get(_FINGERPRINT)
            if not fp:
                message = getattr(chunk, "message", None)
                meta = getattr(message, "response_metadata", None)
                if meta:
                    fp = meta.get(_FINGERPRINT)
            if fp and isinstance(fp, str):
                run = self._runs.get(run_id)
                if run is not None:
                    run.chunk_fingerprint = fp
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockCallbackHandler.on_llm_new_token", exc)

    # -- end ---------------------------------------------------------------------
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the call's record, compare it, add it to the run's metadata."""
        try:
            self._end(response, run_id, parent_run_id)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockCallbackHandler.on_llm_end", exc)

    def _end(self, response: LLMResult, run_id: UUID, parent_run_id: UUID | None) -> None:
        run = self._pop(run_id)
        known = run is not None
        if run is None:  # attached mid-run, or evicted: record what the end tells
            run = _Run(None, {}, (), None, parent_run_id)
        _inflight.leave(run.in_flight)
        generations = response.generations[0] if response.generations else []
        out_messages = [g.message for g in generations if isinstance(g, ChatGeneration)]
        if not out_messages:
            if known and not generations:
                # A chat run that ended with no choices at all: nothing to record,
                # but say so (LangChain then fails the call on its own).
                self.monitor.report_failure(
                    self._start_fields(run, run_id),
                    MalformedResponseError("the model server answered with no choices"),
                )
            return  # else a text-completion LLM: nothing this package hashes
        first = out_messages[0]
        single = len(out_messages) == 1
        meta = first.response_metadata or {}
        llm_output = response.llm_output or {}
        info = generations[0].generation_info or {}
        params = run.params

        # Bounded and stringified as the locked models do: a server sending a
        # non-string or huge fingerprint must not bloat every event and row.
        fingerprint = clean_fingerprint(
            _first_present(
                llm_output.get(_FINGERPRINT), run.chunk_fingerprint,
                info.get(_FINGERPRINT), meta.get(_FINGERPRINT),
            )
        )  # fmt: skip
        # A locked model already hashed the request and the output: reuse them.
        req_hash = _first_str(meta.get(_LOCKED_REQUEST_HASH), llm_output.get(_LOCKED_REQUEST_HASH))
        provider = run.provider
        if req_hash is None:
            req_hash = request_hash_from_messages(provider, run.messages, normalize_params(params))
        out_hash = _first_str(
            meta.get(_LOCKED_OUTPUT_HASH) if single else llm_output.get(_LOCKED_OUTPUT_HASH)
        )
        if out_hash is None:
            out_hash = output_hash(out_messages)
        lock_hash = _first_str(meta.get(_LOCKED_LOCK_HASH), llm_output.get(_LOCKED_LOCK_HASH))
        if lock_hash is None and self.lock is not None:
            lock_hash = self.lock.lock_hash
        seed = meta["seed"] if "seed" in meta else param_value(params, "seed")
        seed = seed if type(seed) is int else None
        usage = first.usage_metadata if isinstance(first, AIMessage) else None
        context = run.context

        record = CallRecord(
            provider=provider,
            request_model=run.model,
            request_hash=req_hash,
            output_hash=out_hash,
            seed=seed,
            system_fingerprint=fingerprint,
            response_model=_first_str(meta.get("model_name"), llm_output.get("model_name")),
            service_tier=_first_str(meta.get("service_tier"), llm_output.get("service_tier")),
            lock_hash=lock_hash,
            params=sampling_params(params),
            input_tokens=usage.get("input_tokens") if usage else None,
            output_tokens=usage.get("output_tokens") if usage else None,
            run_id=str(run_id),
            parent_run_id=_str(run.parent_run_id) or _str(parent_run_id),
            context=context,
            output_text=first.text if single else "\n".join(m.text for m in out_messages),
            output_token_list=_tokens(meta),
            prompt_text=get_buffer_string(run.messages) if self.capture_content else None,
            complete=is_complete(
                provider, _first_present(info.get("finish_reason"), meta.get("finish_reason"))
            ),
            base_url=_inflight.base_url_of(run.serialized or {}),
            declared=merge_declared(
                self.lock.backend if self.lock else (), declared_of(run.serialized or {})
            ),
            in_flight=run.in_flight.count if run.in_flight else None,
            otel=run.otel,
        )
        # Metadata first: the tracers after this handler post the run next.
        run_meta: dict[str, Any] = {
            RUN_META_FINGERPRINT: fingerprint,
            RUN_META_SEED: seed,
            RUN_META_REQUEST_HASH: req_hash,
            RUN_META_OUTPUT_HASH: out_hash,
        }
        if lock_hash:
            run_meta[RUN_META_LOCK_HASH] = lock_hash
        add_run_metadata(
            run_id,
            run_meta,
            metadata=run.metadata if run.metadata_alone else None,
            tracers=_tracers_of(run.config),
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
            run = self._pop(run_id)
            if run is None:
                run = _Run(None, {}, (), None, parent_run_id)
            _inflight.leave(run.in_flight)
            if run.otel is not None:
                run.otel.abandon()
            fields = self._start_fields(run, run_id)
            if run.messages:
                fields[ev.K_REQUEST_HASH] = request_hash_from_messages(
                    run.provider, run.messages, normalize_params(run.params)
                )
            self.monitor.report_failure(fields, error)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockCallbackHandler.on_llm_error", exc)


def add_run_metadata(
    run_id: UUID,
    fields: Mapping[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    tracers: Sequence[Any] = (),
) -> None:
    """Add ``fields`` to the metadata of the tracers' `Run` for ``run_id``.

    ``metadata`` is the run's metadata dict as given to the callbacks (shared
    with `BaseTracer` runs); ``tracers`` are tracer objects whose
    ``run_map`` may hold the run (for `LangChainTracer`, which copies the
    dict). The locked models can call this with ``run_manager.handlers``.
    """
    if metadata is not None:
        metadata.update(fields)
    for tracer in tracers:
        run_map = getattr(tracer, "run_map", None)
        run = run_map.get(str(run_id)) if isinstance(run_map, Mapping) else None
        if run is None:
            continue
        current = run.extra.get("metadata") if isinstance(run.extra, dict) else None
        if current is not None and current is metadata:
            continue  # already updated through the shared dict
        if hasattr(run, "add_metadata"):
            run.add_metadata(dict(fields))
        else:  # pragma: no cover - every Run is a langsmith RunTree in langchain-core 1.x
            run.extra.setdefault("metadata", {}).update(fields)


def _tracers_of(config: Any) -> list[Any]:
    """Tracers of the enclosing runnable's callback manager (see the module
    docstring); ``config`` is ``var_child_runnable_config`` at the run's start."""
    if not config:
        return []
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        handlers: Sequence[Any] = callbacks.handlers
    elif isinstance(callbacks, list):
        handlers = callbacks
    else:
        return []
    return [h for h in handlers if isinstance(h, BaseTracer | AsyncBaseTracer)]


def _first_present(*values: Any) -> Any:
    """The first value that is neither None nor ``""``."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _first_str(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def _serialized_name(serialized: Mapping[str, Any] | None) -> str:
    if not serialized:
        return "unknown"
    ids = serialized.get("id")
    if isinstance(ids, Sequence) and ids and not isinstance(ids, str):
        return str(ids[-1])
    return str(serialized.get("name") or "unknown")


def _tokens(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Generated tokens from OpenAI logprobs in response_metadata, if any."""
    logprobs = meta.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list):
        return None
    return tuple(str(t.get("token", "")) for t in content if isinstance(t, Mapping))
