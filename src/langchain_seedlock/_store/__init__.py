"""Baseline stores: ``open_store(url)`` for memory, SQLite and PostgreSQL.

The SQLite and PostgreSQL modules are imported only when their scheme is
used, so the PostgreSQL driver stays an optional extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_seedlock._errors import StoreError
from langchain_seedlock._store._base import (
    BaselineStore,
    FingerprintSeen,
    OutputSeen,
    RequestSummary,
    StoredEvent,
)
from langchain_seedlock._store._memory import MemoryStore
from langchain_seedlock._store._postgres import redact_url

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

        return SQLiteStore.from_url(url, **options)
    if scheme in ("postgresql", "postgres"):
        from langchain_seedlock._store._postgres import PostgresStore

        return PostgresStore(url, **options)
    shown = scheme or "(none)"
    raise StoreError(
        f"unknown store URL scheme {shown!r} in {redact_url(url)!r}; "
        f"supported: {', '.join(SUPPORTED_SCHEMES)}"
    )


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
