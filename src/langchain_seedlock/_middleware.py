"""`SeedLockMiddleware`: the lock, the record and drift detection for `create_agent`.

A thin door onto the core, like the callback handler: the lock check is
`_enforce` (``find_violations`` / ``apply_policy``), the comparison and the
events are `DriftMonitor`; this module only turns a `ModelRequest` and its
`ModelResponse` into locked model settings and a `CallRecord` with the
agent's context (LangGraph node, step, thread, position in the agent loop).

Where the lock is applied, and why twice:

1. ``request.model_settings``: what middleware *before* this one (outer
   layers, earlier in the ``middleware=[...]`` list) put there is checked
   against the lock, then the locked values are merged in. The agent passes
   model settings to ``model.bind_tools(...)`` / ``model.bind(...)``, so they
   reach every model, locked or not.
2. ``request.model``: a plain ``ChatOpenAI`` / ``AzureChatOpenAI`` is replaced
   by its locked twin (`lock_model`, cached), whose request builder checks
   the final wire payload. Middleware *after* this one (inner layers) can
   still call ``request.override(model_settings=...)``; that arrives as a
   call argument of the locked model and goes through the same policy. A
   model that is already locked with the same lock is kept as is.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "SeedLockMiddleware needs LangChain v1 agents: pip install 'langchain-seedlock[agents]'"
    ) from exc
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, get_buffer_string
from langchain_core.tracers.context import register_configure_hook
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork, _inflight, _otel
from langchain_seedlock._args import check_bool, check_instance, check_number
from langchain_seedlock._body import PARAM_CONTAINERS
from langchain_seedlock._callbacks import door_monitor
from langchain_seedlock._chat_models import LockedChatModel, lock_model
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._enforce import apply_policy, find_violations, locked_request
from langchain_seedlock._errors import (
    LockViolationError,
    UnsupportedModelError,
)
from langchain_seedlock._hashing import (
    PARAM_ALIASES,
    normalize_params,
    output_hash,
    request_hash_from_messages,
)
from langchain_seedlock._identity import declared_of, merge_declared, prefetch
from langchain_seedlock._inflight import base_url_of
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._record import SAMPLING_PARAMS, CallRecord, is_complete

if TYPE_CHECKING:
    from langchain_seedlock._store._base import BaselineStore

# Keys the locked models put into response_metadata (see _chat_models.py).
_META_FINGERPRINT: Final = "system_fingerprint"
_META_SEED: Final = "seed"
_META_LOCK_HASH: Final = "seedlock_lock_hash"
_META_REQUEST_HASH: Final = "seedlock_request_hash"
_META_OUTPUT_HASH: Final = "seedlock_output_hash"
_SOURCE_SETTINGS: Final = "agent model_settings"
_SOURCE_MODEL: Final = "agent model constructor"
_SOURCE_INTERNAL: Final = "middleware internal call"
# Per-step seeds stay in [0, 2**31 - 1]: every backend takes them (llama.cpp
# reads the seed as uint32 and treats 0xFFFFFFFF as "random"; others int32).
_STEP_SEED_MASK: Final = 2**31 - 1
_MODEL_CACHE_SIZE: Final = 64
_RUN_ID_PREFIXES: Final = ("lc_run--", "run-")


def step_seed(seed: int, step: int) -> int:
    """The seed of agent step ``step`` (1-based) derived from the base ``seed``.

    sha256 of ``"seedlock-step:{seed}:{step}"``, first 8 bytes, masked to
    ``[0, 2**31 - 1]``: the same in every process and version, distinct per
    step (up to hash collisions), and accepted by every backend.
    """
    digest = hashlib.sha256(f"seedlock-step:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _STEP_SEED_MASK


@dataclass(slots=True)
class _Call:
    """One model call on its way through the middleware."""

    request: ModelRequest[Any]
    lock: SeedLock
    settings: dict[str, Any]
    context: dict[str, Any]
    provider: str
    model_name: str | None
    parent_run_id: str | None
    log_fields: dict[str, Any] = field(default_factory=dict)
    graph_run: Any = None  # the agent graph's run id (see `_InternalCallGuard`)
    in_flight: _inflight.Token | None = None
    otel: Any = None  # the call's OpenTelemetry export (`_otel._Call`), when on


class SeedLockMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Lock, record and compare every model call of a LangChain v1 agent.

    Setup:
        ```bash
        pip install "langchain-seedlock[agents]"
        ```

    Instantiate:
        ```python
        from langchain.agents import create_agent
        from langchain_openai import ChatOpenAI
        from langchain_seedlock import SeedLock, SeedLockMiddleware, open_store

        lock = SeedLock(seed=123, temperature=0.2, max_tokens=400)
        agent = create_agent(
            ChatOpenAI(model="gpt-4o-mini"),
            tools,
            middleware=[SeedLockMiddleware(lock, store="sqlite:///baselines.db")],
        )
        ```

    Agents:
        Every model call of the agent loop is sent with the seed and the
        locked parameters, whatever model the agent has: the locked values
        are merged into ``request.model_settings`` (which the agent passes to
        ``bind_tools`` / ``bind``), and a plain ``ChatOpenAI`` /
        ``AzureChatOpenAI`` is swapped for its locked twin so the wire payload
        is checked too. A value that another middleware put into
        ``model_settings`` (before this one) or sets after it, or a
        constructor argument of the agent's model that differs from the lock,
        goes through the lock's ``on_violation``: ``"raise"`` refuses the call
        (`LockViolationError`, nothing sent), ``"warn"`` logs
        ``seedlock.lock_violation`` and sends the locked value, ``"ignore"``
        sends it silently. Place it last in ``middleware=[...]`` to see the
        request exactly as the model gets it (retries, fallbacks and
        summaries included); anywhere else it still locks every call.

        Models other than the OpenAI ones get the lock through
        ``model_settings`` only: the seed is passed as ``seed`` (or
        ``random_seed`` for a model with that field, e.g. ``ChatMistralAI``).
        A model that ignores unknown call arguments ignores the seed too:
        use `lock_model` on such a model first to be told.

    Seeds per step (``seed_per_step=True``):
        With the default, every call is sent with ``lock.seed``; two steps
        that send the same prompt collapse onto one sample (a loop that
        repeats a tool call keeps repeating it). With ``seed_per_step`` the
        call at agent step *k* is sent with ``step_seed(lock.seed, k)``:
        distinct per step, the same in every run. The trade-off: the seed now
        depends on the step's position in the loop (counted from the last
        human message), so one extra or missing step (a retry that adds a
        message, a summary, a different tool result) moves every later call
        to another seed and another request hash, and those calls no longer
        compare with their baseline. The per-step lock (``lock.replace(
        seed=...)``) is what is checked and recorded.

    Drift events:
        Each call is handed to a `DriftMonitor` (``seedlock.call``,
        ``seedlock.fingerprint_changed``, ``seedlock.output_drift``...), with
        ``langgraph_node``, ``langgraph_step``, ``langgraph_checkpoint_ns``,
        ``thread_id`` and ``agent_step`` (1 for the first model call after
        the last human message) in every event. A call that raises is logged
        as ``seedlock.call_failed`` and re-raised.

    Args:
        lock: the seed and parameters every call is sent with.
        store: a `BaselineStore`, a store URL, or None (this process's memory).
        monitor: a `DriftMonitor` to share with handlers or other agents
            (then ``store`` and ``capture_content`` belong to it).
        capture_content: put prompt and output text in events and the store.
        seed_per_step: a distinct, reproducible seed per agent step (above).
        lock_models: swap a plain OpenAI model for its locked twin (above);
            ``False`` applies the lock through ``model_settings`` only.
        metadata_keys: run metadata keys (``config={"metadata": {...}}``)
            copied into every event of the call and the stored drift events,
            e.g. ``("tenant", "user_id")``; none by default, as metadata may
            hold personal data.
        include_tags: put the run's tags (``config={"tags": [...]}``) in every
            event of the call, as a list under ``tags``.
        otel: export each call's record and verdict to OpenTelemetry (the
            ``otel`` extra; see docs/otel.md): True, a `SeedLockOTel`, or
            None to follow the environment variable ``SEEDLOCK_OTEL``.
    """

    def __init__(
        self,
        lock: SeedLock,
        *,
        store: BaselineStore | str | None = None,
        monitor: DriftMonitor | None = None,
        capture_content: bool = False,
        seed_per_step: bool = False,
        lock_models: bool = True,
        metadata_keys: Sequence[str] = (),
        include_tags: bool = False,
        otel: bool | _otel.SeedLockOTel | None = None,
    ) -> None:
        super().__init__()
        owner = "SeedLockMiddleware"
        # Every argument checked here, before anything is opened or started.
        check_instance(owner, "lock", lock, SeedLock, "a SeedLock")
        check_bool(owner, "capture_content", capture_content)
        check_bool(owner, "seed_per_step", seed_per_step)
        check_bool(owner, "lock_models", lock_models)
        self.metadata_keys, self.include_tags = ev.check_context_options(
            owner, metadata_keys, include_tags
        )
        otel_options = _otel.door_options(owner, otel)
        monitor, self._owned_store = door_monitor(owner, store, monitor, capture_content)
        self._otel = _otel.door_exporter(otel_options, monitor.capture_content)
        self.lock = lock
        self.monitor = monitor
        self.capture_content = monitor.capture_content
        self.seed_per_step = seed_per_step
        self.lock_models = lock_models
        self._models: OrderedDict[tuple[int, str, str], tuple[BaseChatModel, BaseChatModel]] = (
            OrderedDict()
        )
        self._models_lock = threading.Lock()
        _LIVE.add(self)  # see _InternalCallGuard
        _fork.register(self, after_in_child=SeedLockMiddleware._after_fork_in_child)

    def __repr__(self) -> str:
        return (
            f"SeedLockMiddleware(lock={self.lock!r}, monitor={self.monitor!r}, "
            f"seed_per_step={self.seed_per_step})"
        )

    step_seed = staticmethod(step_seed)

    def _after_fork_in_child(self) -> None:
        self._models_lock = threading.Lock()  # a parent's thread may have held it

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every observed call is in the store."""
        check_number("SeedLockMiddleware.flush", "timeout", timeout, minimum=0, allow_none=True)
        return self.monitor.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the monitor's writer thread; close the store if the
        middleware opened it from a URL. Returns False if records were left unwritten.

        Final, like `SeedLockCallbackHandler.close`: a call seen afterwards is
        logged and reported as ``seedlock.store_error``, not stored.
        """
        check_number("SeedLockMiddleware.close", "timeout", timeout, minimum=0, allow_none=True)
        done = self.monitor.close(timeout)
        if self._owned_store is not None:
            self._owned_store.close()
        return done

    def __enter__(self) -> SeedLockMiddleware:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the hooks ---------------------------------------------------------------
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Send the call locked, then record and compare it."""
        call = self._prepare(request)
        base_url = base_url_of(request.model)
        prefetch(base_url, call.model_name)
        call.in_flight = _inflight.enter(_inflight.key_for(base_url, call.provider))
        try:
            response = handler(call.request)
        except Exception as exc:
            self._failed(call, exc)
            raise
        finally:
            _inflight.leave(call.in_flight)
            self._report_internal_calls(call.graph_run)
        record = self._record(call, response)
        if record is not None:
            self.monitor.observe(record)
        return response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """`wrap_model_call` for ``ainvoke`` / ``astream``."""
        call = self._prepare(request)
        base_url = base_url_of(request.model)
        prefetch(base_url, call.model_name)
        call.in_flight = _inflight.enter(_inflight.key_for(base_url, call.provider))
        try:
            response = await handler(call.request)
        except Exception as exc:
            self._failed(call, exc)
            raise
        finally:
            _inflight.leave(call.in_flight)
            self._report_internal_calls(call.graph_run)
        record = self._record(call, response)
        if record is not None:
            await self.monitor.aobserve(record)
        return response

    # -- before the call -----------------------------------------------------------
    def _prepare(self, request: ModelRequest[Any]) -> _Call:
        context, parent_run_id, node_run = _context(
            request, metadata_keys=self.metadata_keys, include_tags=self.include_tags
        )
        graph_run = _GUARD.graph_of(node_run)
        self._report_internal_calls(graph_run)
        lock = self.lock
        if self.seed_per_step:
            lock = lock.replace(seed=step_seed(lock.seed, context["agent_step"]))
        model = request.model
        provider, model_name = _provider(model), _model_name(model)
        log_fields = {ev.K_PROVIDER: provider, ev.K_REQUEST_MODEL: model_name, **context}
        # What earlier middleware put into model_settings, against the lock; then
        # the model itself, so that later overrides are checked on the wire.
        given = dict(request.model_settings or {})
        try:
            apply_policy(
                lock, find_violations(lock, given), source=_SOURCE_SETTINGS, log_fields=log_fields
            )
            if self.lock_models:
                model = self._locked_model(model, lock, log_fields)
        except LockViolationError as exc:  # refused: logged like a call that failed
            self.monitor.report_failure(
                {**log_fields, ev.K_SEED: lock.seed, ev.K_LOCK_HASH: lock.lock_hash}, exc
            )
            raise
        wire = lock.wire_params()
        if _seed_field(model) == "random_seed":
            wire["random_seed"] = wire.pop("seed")
        locked_names = set(normalize_params(wire))
        settings = {k: v for k, v in given.items() if PARAM_ALIASES.get(k, k) not in locked_names}
        settings.update(wire)
        settings = locked_request(lock, settings)  # extra_body / model_kwargs entries too
        return _Call(
            graph_run=graph_run,
            request=request.override(model=model, model_settings=settings),
            lock=lock,
            settings=settings,
            context=context,
            provider=_provider(model),
            model_name=model_name,
            parent_run_id=parent_run_id,
            log_fields=log_fields,
            otel=self._otel.start() if self._otel is not None else None,
        )

    def _locked_model(
        self, model: BaseChatModel, lock: SeedLock, log_fields: Mapping[str, Any]
    ) -> BaseChatModel:
        existing = getattr(model, "lock", None)
        if isinstance(existing, SeedLock):
            if existing.canonical() == lock.canonical():
                return model
            raise UnsupportedModelError(
                f"the agent's model is already locked with {existing!r}, which differs from "
                f"the middleware's {lock!r}; give the agent the unlocked model (the "
                "middleware locks it), or the same lock without seed_per_step"
            )
        if type(model) not in (ChatOpenAI, AzureChatOpenAI):
            return model  # model_settings carry the lock (see the class docstring)
        key = (id(model), lock.lock_hash, lock.on_violation)
        with self._models_lock:
            hit = self._models.get(key)
            if hit is not None and hit[0] is model:
                self._models.move_to_end(key)
                return hit[1]
        # Constructor values that differ from the lock: the same policy as a call.
        # (ChatOpenAI names its fields as the wire does; response_format lives
        # in model_kwargs, where `lock_model` checks it.)
        # Its model_kwargs / extra_body reach the wire too: checked alike.
        given = {name: getattr(model, name, None) for name in lock.canonical()}
        nested = {name: getattr(model, name, None) for name in PARAM_CONTAINERS}
        nested = {k: v for k, v in nested.items() if isinstance(v, Mapping)}
        conflicts = find_violations(
            lock, {**{k: v for k, v in given.items() if v is not None}, **nested}
        )
        apply_policy(lock, conflicts, source=_SOURCE_MODEL, log_fields=log_fields)
        update: dict[str, Any] = {v.field: None for v in conflicts}
        if conflicts and nested:
            update.update(locked_request(lock, nested))
        base = model.model_copy(update=update)
        locked = lock_model(base, lock)
        with self._models_lock:
            self._models[key] = (model, locked)  # keeps `model` alive: its id stays unique
            while len(self._models) > _MODEL_CACHE_SIZE:
                self._models.popitem(last=False)
        return locked

    # -- after the call ------------------------------------------------------------
    def _failed(self, call: _Call, exc: Exception) -> None:
        if call.otel is not None:
            call.otel.abandon()
        if _is_control_flow(exc):
            return
        fields = {
            **call.log_fields,
            ev.K_SEED: call.lock.seed,
            ev.K_LOCK_HASH: call.lock.lock_hash,
            "parent_run_id": call.parent_run_id,
        }
        self.monitor.report_failure(fields, exc)

    def _report_internal_calls(self, graph_run: Any) -> None:
        """``seedlock.unseeded_call`` / ``seedlock.lock_violation`` for model calls
        that other middleware made in this agent run outside the model call this
        middleware wraps (a summary, a tool selection...): sent as they were,
        since there is no request to lock there, but never unnoticed."""
        if graph_run is None:
            return
        try:
            for internal in _GUARD.take(graph_run):
                violations = find_violations(self.lock, internal.params, require_all=True)
                if violations:
                    self.monitor.report_violations(
                        internal.fields, violations,
                        lock_hash=self.lock.lock_hash, source=_SOURCE_INTERNAL,
                    )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.report_internal_calls", exc)

    def _record(self, call: _Call, response: Any) -> CallRecord | None:
        try:
            return self._build_record(call, response)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.record", exc)
            return None

    def _build_record(self, call: _Call, response: Any) -> CallRecord | None:
        messages = _result_messages(response)
        ai = next((m for m in messages if isinstance(m, AIMessage)), None)
        if ai is None:
            return None
        meta = ai.response_metadata or {}
        request = call.request
        sent = _sent_messages(request)
        req_hash = _str(meta.get(_META_REQUEST_HASH)) or request_hash_from_messages(
            call.provider, sent, _hash_params(call)
        )
        seed = meta.get(_META_SEED, call.lock.seed)
        usage: Mapping[str, Any] = ai.usage_metadata or {}
        return CallRecord(
            provider=call.provider,
            request_model=call.model_name,
            request_hash=req_hash,
            output_hash=_str(meta.get(_META_OUTPUT_HASH)) or output_hash([ai]),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            system_fingerprint=_str(meta.get(_META_FINGERPRINT)),
            response_model=_str(meta.get("model_name")),
            service_tier=_str(meta.get("service_tier")),
            lock_hash=_str(meta.get(_META_LOCK_HASH)) or call.lock.lock_hash,
            params={k: call.settings[k] for k in SAMPLING_PARAMS if k in call.settings},
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            run_id=_run_id(ai),
            parent_run_id=call.parent_run_id,
            context=call.context,
            output_text=ai.text,
            output_token_list=_tokens(meta),
            prompt_text=get_buffer_string(sent) if self.capture_content else None,
            complete=is_complete(call.provider, meta.get("finish_reason")),
            base_url=base_url_of(request.model),
            declared=merge_declared(declared_of(request.model), call.lock.backend),
            in_flight=call.in_flight.count if call.in_flight else None,
            otel=call.otel,
        )


# -- model calls other middleware make ----------------------------------------------
@dataclass(frozen=True, slots=True)
class _InternalCall:
    params: Mapping[str, Any]  # invocation params, as LangChain gave them
    fields: dict[str, Any]  # the event fields


class _InternalCallGuard(BaseCallbackHandler):
    """Sees the model calls that other middleware make inside an agent run, for
    `SeedLockMiddleware` to report the ones sent without the lock.

    Why: ``SummarizationMiddleware`` (and ``LLMToolSelectorMiddleware``,
    ``LLMToolEmulator``) call their own model from their own hooks. Those calls
    never pass through ``wrap_model_call``, and no middleware hook can change
    another middleware's model: this package cannot lock them. LangChain tags
    them with an ``lc_source`` metadata key; this handler, attached to every
    run by a LangChain configure hook while a `SeedLockMiddleware` exists,
    notes each such call under the agent graph's run (found through the run
    tree: call -> ... -> graph node -> graph). The middleware of that graph
    run takes the notes at its next model call and logs (and stores)
    ``seedlock.unseeded_call`` / ``seedlock.lock_violation`` for every one that
    was not sent with its lock. A call made with a locked model (`lock_model`)
    matches the lock and is not reported.

    Cost for everything else: one metadata lookup per chain start; all memory
    is bounded (old runs are forgotten first).
    """

    run_inline = True  # noted before the call returns, in sync and async runs
    raise_error = False

    _MAX_RUNS: Final = 8192
    _MAX_GRAPHS: Final = 1024
    _MAX_PER_GRAPH: Final = 64

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._parents: OrderedDict[Any, Any] = OrderedDict()  # run -> parent (inside nodes)
        self._node_graph: OrderedDict[Any, Any] = OrderedDict()  # node run -> graph run
        self._pending: OrderedDict[Any, list[_InternalCall]] = OrderedDict()

    # Only chain starts and chat model starts are needed: LangChain skips the
    # rest for this handler (token streams above all).
    @property
    def ignore_llm(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: Any,
        parent_run_id: Any = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember where runs inside graph nodes sit in the run tree."""
        node = metadata.get("langgraph_node") if metadata else None
        if node is None or parent_run_id is None:
            return
        try:
            table = self._node_graph if kwargs.get("name") == node else self._parents
            with self._lock:
                table[run_id] = parent_run_id
                if len(table) > self._MAX_RUNS:
                    table.popitem(last=False)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.guard.on_chain_start", exc)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: Any,
        parent_run_id: Any = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a model call that a middleware made itself (``lc_source`` set)."""
        if not metadata or "lc_source" not in metadata or "langgraph_node" not in metadata:
            return
        try:
            self._note(run_id, parent_run_id, metadata, kwargs.get("invocation_params") or {})
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.guard.on_chat_model_start", exc)

    def _note(
        self, run_id: Any, parent_run_id: Any, metadata: Mapping[str, Any], params: Any
    ) -> None:
        with self._lock:
            graph = self._graph_above(parent_run_id)
            if graph is None:
                return
            model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
            fields: dict[str, Any] = {
                ev.K_PROVIDER: metadata.get("ls_provider") or params.get("_type"),
                ev.K_REQUEST_MODEL: None if model is None else str(model),
                ev.K_SEED: params.get("seed"),
                "run_id": str(run_id),
                "parent_run_id": None if parent_run_id is None else str(parent_run_id),
                "lc_source": metadata["lc_source"],
                "seedlock.hint": _INTERNAL_HINT,
            }
            fields.update(ev.call_context(metadata))
            notes = self._pending.setdefault(graph, [])
            self._pending.move_to_end(graph)
            if len(notes) < self._MAX_PER_GRAPH:
                notes.append(_InternalCall(dict(params), fields))
            while len(self._pending) > self._MAX_GRAPHS:
                self._pending.popitem(last=False)

    def _graph_above(self, run: Any) -> Any:
        """The graph run above ``run``: up through the runs inside the node, then
        the node's parent (caller holds the lock)."""
        for _ in range(32):  # runs nest a few levels inside a node; never loop forever
            if run is None:
                return None
            graph = self._node_graph.get(run)
            if graph is not None:
                return graph
            run = self._parents.get(run)
        return None

    def graph_of(self, node_run: Any) -> Any:
        """The graph run of the node run ``node_run`` (None if unknown)."""
        if node_run is None:
            return None
        with self._lock:
            return self._node_graph.get(node_run)

    def take(self, graph_run: Any) -> list[_InternalCall]:
        """The calls noted under ``graph_run`` since the last take (then forgotten)."""
        with self._lock:
            return self._pending.pop(graph_run, [])


_INTERNAL_HINT: Final = (
    "a model call another middleware made itself (e.g. SummarizationMiddleware's summary), "
    "outside the agent's model call: SeedLockMiddleware cannot lock it; give that "
    "middleware a locked model (lock_model(model, lock))"
)
_GUARD = _InternalCallGuard()
# The living middleware; while there is one, every run gets the guard.
_LIVE: weakref.WeakSet[SeedLockMiddleware] = weakref.WeakSet()


class _GuardWhileLive:
    """Quacks like the `ContextVar` LangChain's configure hooks read (``.get()``)."""

    def get(self) -> _InternalCallGuard | None:
        return _GUARD if _LIVE else None


register_configure_hook(
    cast("Any", _GuardWhileLive()),
    True,  # inheritable: the node runs and the calls inside them get it too
    _InternalCallGuard,
    None,
)


# -- helpers -----------------------------------------------------------------------
def _context(
    request: ModelRequest[Any], *, metadata_keys: tuple[str, ...], include_tags: bool
) -> tuple[dict[str, Any], str | None, Any]:
    """The agent's position: LangGraph metadata, thread and step in the loop,
    and what the user allowed (`ev.call_context`); the model node's run id (as
    a string, and as given: for `_GUARD`)."""
    context: dict[str, Any] = {}
    parent_run_id: str | None = None
    run: Any = None
    try:
        from langgraph.config import get_config

        config = get_config()
    except RuntimeError:  # called outside a graph (a unit test of the hook itself)
        config = None
    if config is not None:
        metadata = config.get("metadata") or {}
        configurable = config.get("configurable") or {}
        context = ev.call_context(
            metadata,
            config.get("tags"),
            metadata_keys=metadata_keys,
            include_tags=include_tags,
        )
        thread = configurable.get("thread_id", metadata.get("thread_id"))
        if thread is not None:
            context["thread_id"] = str(thread)
        run = getattr(config.get("callbacks"), "parent_run_id", None)
        parent_run_id = str(run) if run is not None else None
    context["agent_step"] = _agent_step(request)
    return context, parent_run_id, run


def _agent_step(request: ModelRequest[Any]) -> int:
    """1 + the AI messages since the last human message (the loop restarts per turn)."""
    state = request.state if isinstance(request.state, Mapping) else {}
    messages: Sequence[BaseMessage] = state.get("messages") or request.messages
    step = 1
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, AIMessage):
            step += 1
    return step


def _provider(model: Any) -> str:
    own = getattr(model, "_seedlock_provider", None)
    if isinstance(own, str):
        return own
    if isinstance(model, BaseChatModel):
        try:
            ls = model._get_ls_params()
        except Exception:  # noqa: BLE001 - a model without LangSmith params
            ls = {}
        name = ls.get("ls_provider")
        if isinstance(name, str) and name:
            return name
        return str(model._llm_type)
    return type(model).__name__


def _model_name(model: Any) -> str | None:
    inner = model.model if isinstance(model, LockedChatModel) else model
    for attr in ("model_name", "model", "model_id"):
        value = getattr(inner, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _seed_field(model: Any) -> str:
    fields = getattr(type(model), "model_fields", {})
    if "seed" not in fields and "random_seed" in fields:
        return "random_seed"
    return "seed"


def _sent_messages(request: ModelRequest[Any]) -> list[BaseMessage]:
    if request.system_message is not None:
        return [request.system_message, *request.messages]
    return list(request.messages)


def _hash_params(call: _Call) -> dict[str, Any]:
    """What the request asks for besides the messages, for a model that did not hash it."""
    request = call.request
    params: dict[str, Any] = {"model": call.model_name, **call.settings}
    tools = []
    for tool in request.tools:
        try:
            tools.append(convert_to_openai_tool(tool))
        except Exception:  # noqa: BLE001 - an exotic tool hashes by its name
            tools.append({"name": getattr(tool, "name", repr(tool))})
    if tools:
        params["tools"] = tools
    if request.tool_choice is not None:
        params["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        params["response_format"] = getattr(
            request.response_format, "schema", request.response_format
        )
    return params


def _result_messages(response: Any) -> list[BaseMessage]:
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    if isinstance(inner, AIMessage):
        return [inner]
    result = getattr(inner, "result", None)
    return list(result) if isinstance(result, list) else []


def _run_id(message: AIMessage) -> str | None:
    """The model run's id, from the message id LangChain gives it (``lc_run--<id>-0``)."""
    mid = message.id or ""
    for prefix in _RUN_ID_PREFIXES:
        if mid.startswith(prefix):
            rest = mid[len(prefix) :]
            return rest[:36] if len(rest) >= 36 else None
    return None


def _tokens(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    logprobs = meta.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    return tuple(str(t.get("token", "")) for t in content if isinstance(t, Mapping))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _is_control_flow(exc: BaseException) -> bool:
    """LangGraph interrupts and commands travel as exceptions; they are not failures."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - langgraph is a dependency of langchain
        return False
    return isinstance(exc, GraphBubbleUp)
