"""Reproducible, drift-aware LLM calls for LangChain."""

from importlib import metadata

from langchain_seedlock._chat_models import (
    LockedAzureChatOpenAI,
    LockedChatModel,
    LockedChatOpenAI,
    lock_model,
)
from langchain_seedlock._errors import (
    InvalidLockError,
    LockViolationError,
    MalformedResponseError,
    ParamDroppedError,
    SeedLockError,
    StoreError,
    UnsupportedModelError,
)
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._store import BaselineStore, open_store

try:
    __version__ = metadata.version(__package__ or "langchain-seedlock")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BaselineStore",
    "InvalidLockError",
    "LockViolationError",
    "MalformedResponseError",
    "LockedAzureChatOpenAI",
    "LockedChatModel",
    "LockedChatOpenAI",
    "ParamDroppedError",
    "SeedLock",
    "SeedLockError",
    "StoreError",
    "UnsupportedModelError",
    "__version__",
    "lock_model",
    "open_store",
]
