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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

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
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, get_buffer_string
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._chat_models import LockedChatModel, lock_model
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._enforce import apply_policy, find_violations
from langchain_seedlock._errors import LockViolationError, UnsupportedModelError
from langchain_seedlock._hashing import (
    PARAM_ALIASES,
    normalize_params,
    output_hash,
    request_hash_from_messages,
)
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._record import SAMPLING_PARAMS, CallRecord

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
    ) -> None:
        super().__init__()
        if not isinstance(lock, SeedLock):
            raise TypeError(f"lock must be a SeedLock, got {type(lock).__name__}")
        if monitor is not None and store is not None:
            raise ValueError("pass either store= or monitor= (the monitor owns its store)")
        if monitor is None:
            if isinstance(store, str):
                from langchain_seedlock._store import open_store

                store = open_store(store)
            monitor = DriftMonitor(store, capture_content=capture_content)
        self.lock = lock
        self.monitor = monitor
        self.capture_content = monitor.capture_content
        self.seed_per_step = seed_per_step
        self.lock_models = lock_models
        self._models: OrderedDict[tuple[int, str, str], tuple[BaseChatModel, BaseChatModel]] = (
            OrderedDict()
        )
        self._models_lock = threading.Lock()
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
        return self.monitor.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the monitor's writer thread."""
        return self.monitor.close(timeout)

    # -- the hooks ---------------------------------------------------------------
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Send the call locked, then record and compare it."""
        call = self._prepare(request)
        try:
            response = handler(call.request)
        except Exception as exc:
            self._failed(call, exc)
            raise
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
        try:
            response = await handler(call.request)
        except Exception as exc:
            self._failed(call, exc)
            raise
        record = self._record(call, response)
        if record is not None:
            await self.monitor.aobserve(record)
        return response

    # -- before the call -----------------------------------------------------------
    def _prepare(self, request: ModelRequest[Any]) -> _Call:
        context, parent_run_id = _context(request)
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
        return _Call(
            request=request.override(model=model, model_settings=settings),
            lock=lock,
            settings=settings,
            context=context,
            provider=_provider(model),
            model_name=model_name,
            parent_run_id=parent_run_id,
            log_fields=log_fields,
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
        given = {name: getattr(model, name, None) for name in lock.canonical()}
        conflicts = find_violations(lock, {k: v for k, v in given.items() if v is not None})
        apply_policy(lock, conflicts, source=_SOURCE_MODEL, log_fields=log_fields)
        base = model.model_copy(update={v.field: None for v in conflicts})
        locked = lock_model(base, lock)
        with self._models_lock:
            self._models[key] = (model, locked)  # keeps `model` alive: its id stays unique
            while len(self._models) > _MODEL_CACHE_SIZE:
                self._models.popitem(last=False)
        return locked

    # -- after the call ------------------------------------------------------------
    def _failed(self, call: _Call, exc: Exception) -> None:
        if _is_control_flow(exc):
            return
        fields = {
            **call.log_fields,
            ev.K_SEED: call.lock.seed,
            ev.K_LOCK_HASH: call.lock.lock_hash,
            "parent_run_id": call.parent_run_id,
        }
        self.monitor.report_failure(fields, exc)

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
        )


# -- helpers -----------------------------------------------------------------------
def _context(request: ModelRequest[Any]) -> tuple[dict[str, Any], str | None]:
    """The agent's position: LangGraph metadata, thread and step in the loop."""
    context: dict[str, Any] = {}
    parent_run_id: str | None = None
    try:
        from langgraph.config import get_config

        config = get_config()
    except RuntimeError:  # called outside a graph (a unit test of the hook itself)
        config = None
    if config is not None:
        metadata = config.get("metadata") or {}
        configurable = config.get("configurable") or {}
        for key in ("langgraph_node", "langgraph_step", "langgraph_checkpoint_ns"):
            if key in metadata:
                context[key] = metadata[key]
        thread = configurable.get("thread_id", metadata.get("thread_id"))
        if thread is not None:
            context["thread_id"] = str(thread)
        run = getattr(config.get("callbacks"), "parent_run_id", None)
        parent_run_id = str(run) if run is not None else None
    context["agent_step"] = _agent_step(request)
    return context, parent_run_id


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
