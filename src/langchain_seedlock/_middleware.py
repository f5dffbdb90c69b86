"""`SeedLockMiddleware`: the lock, the record and drift detection for `create_agent`.

A translator: an agent's `ModelRequest` in (`_agent_request`), locked settings
out (`_observe.apply_lock`; a plain OpenAI model swapped for its locked twin,
`_agent_twins`, so later middleware's values are checked on the wire), the
response's record (`_observe.record_from_result`) to `DriftMonitor.observe`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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

from langchain_seedlock import _agent_request as agent
from langchain_seedlock import _events as ev
from langchain_seedlock import _inflight, _otel
from langchain_seedlock import _observe as core
from langchain_seedlock._agent_guard import GUARD, LIVE
from langchain_seedlock._agent_twins import LockedTwins
from langchain_seedlock._args import check_bool, check_instance
from langchain_seedlock._door import ObservingDoor
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import LockViolationError
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._record import CallRecord

if TYPE_CHECKING:
    from langchain_seedlock._store._base import BaselineStore

__all__ = ["SeedLockMiddleware"]

_SOURCE_SETTINGS: Final = "agent model_settings"
_SOURCE_INTERNAL: Final = "middleware internal call"


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
    fail_fields: dict[str, Any]  # the fields of its seedlock.call_failed
    graph_run: Any  # the agent graph's run id (see `_agent_guard`)
    otel: Any  # the call's OpenTelemetry export (`_otel._Call`), when on
    in_flight: _inflight.Token | None  # counted in `_inflight` until it ends


class SeedLockMiddleware(ObservingDoor, AgentMiddleware[AgentState[Any], Any, Any]):
    """Lock, record and compare every model call of a LangChain v1 agent.

    Setup (``pip install "langchain-seedlock[agents]"``):
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
        Every model call is sent with the lock, whatever the model: merged into
        ``request.model_settings``, and a plain ``ChatOpenAI`` /
        ``AzureChatOpenAI`` swapped for its locked twin. A value another
        middleware or the model's constructor sets goes through the lock's
        ``on_violation`` (``"raise"``: `LockViolationError`, nothing sent).
        Other models get the lock through ``model_settings`` only (``seed``,
        or ``random_seed`` for a model with that field). Details: docs/agents.md.

    Seeds per step (``seed_per_step=True``):
        The call at agent step *k* (from the last human message) is sent with
        ``step_seed(lock.seed, k)``: distinct per step, the same in every run;
        one extra or missing step moves every later call to another seed.

    Drift events:
        ``seedlock.call``, ``seedlock.output_drift``... with ``langgraph_node``,
        ``langgraph_step``, ``thread_id`` and ``agent_step``; a call that raises
        is logged as ``seedlock.call_failed`` and re-raised.

    Args:
        lock: the seed and parameters every call is sent with.
        store: a `BaselineStore`, a store URL, or None (this process's memory).
        monitor: a `DriftMonitor` to share (then it owns store and capture_content).
        capture_content: put prompt and output text in events and the store, and
            each request's payload (messages, tools, parameters; never headers or
            keys), which `seedlock verify --recorded` re-sends.
        seed_per_step: a distinct, reproducible seed per agent step (above).
        lock_models: swap a plain OpenAI model for its locked twin (above);
            ``False`` applies the lock through ``model_settings`` only.
        metadata_keys: run metadata keys copied into every event of the call
            (see `SeedLockCallbackHandler`); none by default.
        include_tags: put the run's tags in every event, under ``tags``.
        otel: OpenTelemetry export (see `SeedLockCallbackHandler`, docs/otel.md).
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
        owner = "SeedLockMiddleware"  # every argument checked before anything is opened
        check_instance(owner, "lock", lock, SeedLock, "a SeedLock")
        check_bool(owner, "seed_per_step", seed_per_step)
        check_bool(owner, "lock_models", lock_models)
        self._open(
            owner, store=store, monitor=monitor, capture_content=capture_content,
            metadata_keys=metadata_keys, include_tags=include_tags, otel=otel,
        )  # fmt: skip
        self.lock = lock
        self.seed_per_step = seed_per_step
        self.lock_models = lock_models
        self._twins = LockedTwins()
        LIVE.add(self)  # see `_agent_guard`

    def __repr__(self) -> str:
        lock, monitor, per_step = self.lock, self.monitor, self.seed_per_step
        return f"SeedLockMiddleware(lock={lock!r}, monitor={monitor!r}, seed_per_step={per_step})"

    step_seed = staticmethod(agent.step_seed)

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
        finally:
            _inflight.leave(call.in_flight)
            GUARD.report(call.graph_run, self.lock, self.monitor, source=_SOURCE_INTERNAL)
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
        finally:
            _inflight.leave(call.in_flight)
            GUARD.report(call.graph_run, self.lock, self.monitor, source=_SOURCE_INTERNAL)
        record = self._record(call, response)
        if record is not None:
            await self.monitor.aobserve(record)
        return response

    # -- before the call -----------------------------------------------------------
    def _prepare(self, request: ModelRequest[Any]) -> _Call:
        context, parent_run_id, node_run = agent.position(
            request, metadata_keys=self.metadata_keys, include_tags=self.include_tags
        )
        graph_run = GUARD.graph_of(node_run)
        GUARD.report(graph_run, self.lock, self.monitor, source=_SOURCE_INTERNAL)
        lock = self.lock
        if self.seed_per_step:
            lock = lock.replace(seed=agent.step_seed(lock.seed, context["agent_step"]))
        model = request.model
        model_name = agent.model_name(model)
        log_fields = {ev.K_PROVIDER: agent.provider(model), ev.K_REQUEST_MODEL: model_name}
        log_fields.update(context)
        # Earlier middleware's settings through the lock; later ones on the wire (the twin).
        fail_fields = {**log_fields, ev.K_SEED: lock.seed, ev.K_LOCK_HASH: lock.lock_hash}
        try:
            given, _ = core.apply_lock(
                request.model_settings or {}, lock, source=_SOURCE_SETTINGS, log_fields=log_fields
            )
            if self.lock_models:
                model = self._twins.twin(model, lock, log_fields)
        except LockViolationError as exc:  # refused: logged like a call that failed
            self.monitor.report_failure(fail_fields, exc)
            raise
        settings = core.with_lock(given, lock, seed_key=agent.seed_field(model))
        request = request.override(model=model, model_settings=settings)
        fail_fields["parent_run_id"] = parent_run_id
        return _Call(
            request, lock, settings, context, agent.provider(model), model_name, parent_run_id,
            fail_fields,
            graph_run, self._otel.start() if self._otel is not None else None,
            agent.enter_in_flight(model, agent.provider(model), model_name),
        )  # fmt: skip

    # -- after the call ------------------------------------------------------------
    def _failed(self, call: _Call, exc: Exception) -> None:
        agent.call_failed(call.request.model, call.otel, exc)
        if not agent.is_control_flow(exc):
            self.monitor.report_failure(call.fail_fields, exc)

    def _record(self, call: _Call, response: Any) -> CallRecord | None:
        try:
            ai = agent.answer(response)
            if ai is None:
                return None
            return core.record_from_result(
                provider=call.provider, request_model=call.model_name, outputs=[ai],
                sent=agent.sent_messages(call.request),
                params=agent.hash_params(call.request, call.model_name, call.settings),
                lock=call.lock, run_id=agent.run_id(ai), parent_run_id=call.parent_run_id,
                context=call.context, capture_content=self.capture_content, otel=call.otel,
                **agent.backend_inputs(call.request.model, call.lock, call.in_flight),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.record", exc)
            return None
