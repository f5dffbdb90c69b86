"""The model calls other middleware make inside an agent run (a summary, a
tool selection...): seen by a callback handler LangChain attaches to every
run while a `SeedLockMiddleware` lives, for the middleware to report the
ones sent without its lock."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.tracers.context import register_configure_hook

from langchain_seedlock import _events as ev
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._enforce import find_violations
from langchain_seedlock._lock import SeedLock


@dataclass(frozen=True, slots=True)
class InternalCall:
    params: Mapping[str, Any]  # invocation params, as LangChain gave them
    fields: dict[str, Any]  # the event fields


class InternalCallGuard(BaseCallbackHandler):
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
        self._pending: OrderedDict[Any, list[InternalCall]] = OrderedDict()

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
                "seedlock.hint": INTERNAL_HINT,
            }
            fields.update(ev.call_context(metadata))
            notes = self._pending.setdefault(graph, [])
            self._pending.move_to_end(graph)
            if len(notes) < self._MAX_PER_GRAPH:
                notes.append(InternalCall(dict(params), fields))
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

    def report(self, graph_run: Any, lock: SeedLock, monitor: DriftMonitor, *, source: str) -> None:
        """``seedlock.unseeded_call`` / ``seedlock.lock_violation`` for the calls
        noted under ``graph_run`` that were not sent with ``lock``: sent as they
        were (there is no request to lock here), never unnoticed."""
        if graph_run is None:
            return
        try:
            for internal in self.take(graph_run):
                violations = find_violations(lock, internal.params, require_all=True)
                if violations:
                    monitor.report_violations(
                        internal.fields, violations, lock_hash=lock.lock_hash, source=source
                    )
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockMiddleware.report_internal_calls", exc)

    def take(self, graph_run: Any) -> list[InternalCall]:
        """The calls noted under ``graph_run`` since the last take (then forgotten)."""
        with self._lock:
            return self._pending.pop(graph_run, [])


INTERNAL_HINT: Final = (
    "a model call another middleware made itself (e.g. SummarizationMiddleware's summary), "
    "outside the agent's model call: SeedLockMiddleware cannot lock it; give that "
    "middleware a locked model (lock_model(model, lock))"
)
GUARD = InternalCallGuard()
# The living middleware; while there is one, every run gets the guard.
LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


class _GuardWhileLive:
    """Quacks like the `ContextVar` LangChain's configure hooks read (``.get()``)."""

    def get(self) -> InternalCallGuard | None:
        return GUARD if LIVE else None


register_configure_hook(
    cast("Any", _GuardWhileLive()),
    True,  # inheritable: the node runs and the calls inside them get it too
    InternalCallGuard,
    None,
)
