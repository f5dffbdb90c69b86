"""Reading an agent's `ModelRequest` / `ModelResponse` for `SeedLockMiddleware`:
the agent's position (LangGraph metadata, step in the loop), the model's
provider, name and seed field, what the request asks for and what came back."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from langchain.agents.middleware import ModelRequest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_seedlock import _events as ev
from langchain_seedlock import _inflight
from langchain_seedlock import _observe as core
from langchain_seedlock._chat_models import LockedChatModel
from langchain_seedlock._identity import declared_of, merge_declared, note_failure, prefetch
from langchain_seedlock._lock import SeedLock

# Per-step seeds stay in [0, 2**31 - 1]: every backend takes them (llama.cpp
# reads the seed as uint32 and treats 0xFFFFFFFF as "random"; others int32).
_STEP_SEED_MASK: Final = 2**31 - 1
_RUN_ID_PREFIXES: Final = ("lc_run--", "run-")


def step_seed(seed: int, step: int) -> int:
    """The seed of agent step ``step`` (1-based) derived from the base ``seed``.

    sha256 of ``"seedlock-step:{seed}:{step}"``, first 8 bytes, masked to
    ``[0, 2**31 - 1]``: the same in every process and version, distinct per
    step (up to hash collisions), and accepted by every backend.
    """
    digest = hashlib.sha256(f"seedlock-step:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _STEP_SEED_MASK


def position(
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
    context["agent_step"] = agent_step(request)
    return context, parent_run_id, run


def agent_step(request: ModelRequest[Any]) -> int:
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


def provider(model: Any) -> str:
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


def model_name(model: Any) -> str | None:
    return core.model_name(model.model if isinstance(model, LockedChatModel) else model)


def seed_field(model: Any) -> str:
    fields = getattr(type(model), "model_fields", {})
    if "seed" not in fields and "random_seed" in fields:
        return "random_seed"
    return "seed"


def sent_messages(request: ModelRequest[Any]) -> list[BaseMessage]:
    if request.system_message is not None:
        return [request.system_message, *request.messages]
    return list(request.messages)


def hash_params(
    request: ModelRequest[Any], model: str | None, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """What the request asks for besides the messages (for a model that did not hash it)."""
    params: dict[str, Any] = {"model": model, **settings}
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


def result_messages(response: Any) -> list[BaseMessage]:
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    if isinstance(inner, AIMessage):
        return [inner]
    result = getattr(inner, "result", None)
    return list(result) if isinstance(result, list) else []


def answer(response: Any) -> AIMessage | None:
    """The model's answer in a `ModelResponse` (None: nothing to record)."""
    return next((m for m in result_messages(response) if isinstance(m, AIMessage)), None)


def run_id(message: AIMessage) -> str | None:
    """The model run's id, from the message id LangChain gives it (``lc_run--<id>-0``)."""
    mid = message.id or ""
    for prefix in _RUN_ID_PREFIXES:
        if mid.startswith(prefix):
            rest = mid[len(prefix) :]
            return rest[:36] if len(rest) >= 36 else None
    return None


def is_control_flow(exc: BaseException) -> bool:
    """LangGraph interrupts and commands travel as exceptions; they are not failures."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - langgraph is a dependency of langchain
        return False
    return isinstance(exc, GraphBubbleUp)


def enter_in_flight(model: Any, provider: str, name: str | None) -> _inflight.Token | None:
    """The call starts: count it in flight to the model's base URL (`_inflight`),
    and have the server describe itself meanwhile (`_identity.prefetch`)."""
    base_url = _inflight.base_url_of(model)
    prefetch(base_url, name)
    return _inflight.enter(_inflight.key_for(base_url, provider))


def call_failed(model: Any, otel: Any, error: BaseException) -> None:
    """A call raised: drop its OpenTelemetry export; tell the server's
    description it may be stale (`_identity.note_failure`)."""
    if otel is not None:
        otel.abandon()
    note_failure(_inflight.base_url_of(model), error)


def backend_inputs(model: Any, lock: SeedLock, in_flight: _inflight.Token | None) -> dict[str, Any]:
    """What the record takes for the backend identity (`_identity`): where the
    call went, what the user declared (the model's, then the lock's), and the
    calls in flight when it started."""
    return {
        "base_url": _inflight.base_url_of(model),
        "declared": merge_declared(declared_of(model), lock.backend),
        "in_flight": in_flight.count if in_flight else None,
    }
