"""Baseline stores: ``open_store(url)`` for memory, SQLite and PostgreSQL.

The SQLite and PostgreSQL modules are imported only when their scheme is
used, so the PostgreSQL driver stays an optional extra.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

from langchain_seedlock._errors import StoreError
from langchain_seedlock._redact import redact_url
from langchain_seedlock._store._base import (
    BaselineStore,
    FingerprintSeen,
    OutputSeen,
    RequestSummary,
    StoredEvent,
)
from langchain_seedlock._store._memory import MemoryStore

ENV_VAR = "SEEDLOCK_STORE"
SUPPORTED_SCHEMES = ("memory://", "sqlite:///", "postgresql://", "postgres://")


def default_store_url() -> str:
    """``$SEEDLOCK_STORE`` if set, else SQLite in the user's state directory."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    import platformdirs

    path = Path(platformdirs.user_state_dir("langchain-seedlock")) / "baselines.db"
    return "sqlite:///" + path.as_posix()


def open_store(url: str | None = None, **options: Any) -> BaselineStore:
    """Open the store at ``url`` (the default store when ``None``).

    ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
    (options: ``busy_timeout``, ``read_only``); ``postgresql://user:pw@host/db``
    or ``postgres://`` (options: ``connect_timeout``, ``statement_timeout``,
    ``max_size``). Raises `StoreError` for an unknown scheme or a store that
    cannot be opened, `StoreVersionError` for a schema from a newer version.
    """
    if url is None:
        url = default_store_url()
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        if options:
            raise StoreError(f"memory:// takes no options (got {sorted(options)})")
        return MemoryStore(url)
    if scheme == "sqlite":
        from langchain_seedlock._store._sqlite import SQLiteStore

        _check_options(SQLiteStore, "SQLite", url, options)
        return SQLiteStore.from_url(url, **options)
    if scheme in ("postgresql", "postgres"):
        from langchain_seedlock._store._postgres import PostgresStore

        _check_options(PostgresStore, "PostgreSQL", url, options)
        return PostgresStore(url, **options)
    shown = scheme or "(none)"
    raise StoreError(
        f"unknown store URL scheme {shown!r} in {redact_url(url)!r}; "
        f"supported: {', '.join(SUPPORTED_SCHEMES)}"
    )


def _check_options(cls: type[BaselineStore], kind: str, url: str, options: dict[str, Any]) -> None:
    """`StoreError` naming an option the store does not take, or a value of the
    wrong type (the type of the option's default: bool, int or a number >= 0)."""
    params = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "url"
    }
    where = f"{kind} store {redact_url(url)!r}"
    for name, value in options.items():
        if name not in params:
            raise StoreError(
                f"{where}: unknown option {name!r}; supported: {', '.join(sorted(params))}"
            )
        default = params[name]
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "True or False"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            want = "an integer >= 0"
        elif isinstance(default, float):
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            )
            want = "a finite number of seconds >= 0"
        else:  # pragma: no cover - every option has a bool, int or float default
            ok, want = True, ""
        if not ok:
            raise StoreError(f"{where}: option {name} must be {want} (got {value!r})")


__all__ = [
    "BaselineStore",
    "FingerprintSeen",
    "MemoryStore",
    "OutputSeen",
    "RequestSummary",
    "StoredEvent",
    "default_store_url",
    "open_store",
]
