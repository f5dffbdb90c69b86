"""Process-wide switch: attach a `SeedLockCallbackHandler` to every LangChain run.

For users who cannot touch their chains. Two ways to turn it on:

- ``enable_auto_attach(handler=None)`` in code (``disable_auto_attach()`` to stop);
- the environment variable ``SEEDLOCK_AUTO_ATTACH=1``, with the store taken
  from ``SEEDLOCK_STORE`` (default: SQLite in the user's state directory,
  see `default_store_url`).

How it works: importing ``langchain_seedlock`` registers one LangChain
configure hook (`langchain_core.tracers.context.register_configure_hook`).
Every time LangChain configures the callbacks of a run, it asks the hook for
a handler and adds it (inheritable, so nested runs get it too) unless a
`SeedLockCallbackHandler` is already in the run's callbacks: a handler you
pass explicitly wins and nothing is observed twice.

When the environment variable is read: lazily, at the first run LangChain
configures after ``langchain_seedlock`` was imported, and then once for the
life of the process (so setting it after import but before the first run
works; importing opens no store and starts no thread). The handler is
process-wide (all threads and asyncio tasks), not per context.

Ordering: LangChain appends hook handlers after the tracers it adds from
environment variables, so with LangSmith tracing by environment the
auto-attached handler's ``on_llm_end`` runs after the tracer has posted the
run: events and the store are complete, but the run metadata keys reach only
in-memory tracers. Pass the handler in ``callbacks`` to get them in LangSmith.
"""

from __future__ import annotations

import os
import threading
from typing import Any, cast

from langchain_core.tracers.context import register_configure_hook

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._args import check_instance
from langchain_seedlock._callbacks import SeedLockCallbackHandler

ENV_VAR = "SEEDLOCK_AUTO_ATTACH"
_TRUE = frozenset({"1", "true", "yes", "on"})


class _ProcessWideHandler:
    """Quacks like the `ContextVar` LangChain's configure hooks read (``.get()``),
    but holds one handler for the whole process."""

    def __init__(self) -> None:
        self._handler: SeedLockCallbackHandler | None = None
        self._owned = False  # created here (then closed here)
        self._decided = False  # env var read, or enable/disable called
        self._lock = threading.Lock()
        _fork.register(self, after_in_child=_ProcessWideHandler._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def get(self) -> SeedLockCallbackHandler | None:
        if self._decided:
            return self._handler
        return self._from_env()

    def _from_env(self) -> SeedLockCallbackHandler | None:
        with self._lock:
            if self._decided:
                return self._handler
            self._decided = True
            if os.environ.get(ENV_VAR, "").strip().lower() not in _TRUE:
                return None
            try:
                self._handler = _default_handler()
                self._owned = True
            except Exception as exc:  # noqa: BLE001 - never break LangChain's configure
                ev.log_internal_error("auto_attach", exc)
                # Memory only, no export (SEEDLOCK_OTEL may be what failed): still observe.
                self._handler = SeedLockCallbackHandler(otel=False)
                self._owned = True
            return self._handler

    def set(self, handler: SeedLockCallbackHandler | None, *, owned: bool) -> Any:
        with self._lock:
            previous, previous_owned = self._handler, self._owned
            self._handler, self._owned, self._decided = handler, owned, True
        if previous is not None and previous_owned and previous is not handler:
            previous.close(timeout=5.0)
        return previous

    def _reset(self) -> None:
        """Forget everything, as if the process had just imported the package (tests)."""
        self.set(None, owned=False)
        with self._lock:
            self._decided = False


_HOLDER = _ProcessWideHandler()
register_configure_hook(
    cast("Any", _HOLDER),
    True,  # inheritable: nested runs of a chain or graph get it too
    SeedLockCallbackHandler,  # not added when one is already in the callbacks
    None,
)


def _default_handler() -> SeedLockCallbackHandler:
    from langchain_seedlock._store import default_store_url

    return SeedLockCallbackHandler(store=default_store_url())


def enable_auto_attach(handler: SeedLockCallbackHandler | None = None) -> SeedLockCallbackHandler:
    """Attach ``handler`` (or a new one on the default store) to every run from now on.

    Returns the handler in use. A handler created here is closed (flushed) by
    `disable_auto_attach` or when another one replaces it.

    Example:
        ```python
        from langchain_seedlock import enable_auto_attach

        enable_auto_attach()  # store from SEEDLOCK_STORE, else SQLite in the state dir
        chain.invoke(...)  # observed without touching the chain
        ```
    """
    if handler is not None:
        check_instance(
            "enable_auto_attach", "handler", handler, SeedLockCallbackHandler,
            "a SeedLockCallbackHandler or None",
        )  # fmt: skip
    owned = handler is None
    if handler is None:
        handler = _default_handler()
    _HOLDER.set(handler, owned=owned)
    return handler


def disable_auto_attach() -> SeedLockCallbackHandler | None:
    """Stop attaching; also overrides ``SEEDLOCK_AUTO_ATTACH``. Returns the handler
    that was attached (a handler created by the package is flushed and closed)."""
    previous: SeedLockCallbackHandler | None = _HOLDER.set(None, owned=False)
    return previous


def auto_attached_handler() -> SeedLockCallbackHandler | None:
    """The handler currently attached to every run, if any."""
    return _HOLDER.get()
