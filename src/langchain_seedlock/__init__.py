"""Reproducible, drift-aware LLM calls for LangChain.

Lock every model call to a seed and sampling parameters, record the
``system_fingerprint`` and request/output hashes, and log drift events.
"""

from importlib import metadata
from typing import TYPE_CHECKING, Any

# Importing _autoattach registers LangChain's configure hook (SEEDLOCK_AUTO_ATTACH).
from langchain_seedlock._autoattach import (
    auto_attached_handler,
    disable_auto_attach,
    enable_auto_attach,
)
from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._chat_models import (
    LockedAzureChatOpenAI,
    LockedChatModel,
    LockedChatOpenAI,
    lock_model,
)
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    InvalidLockError,
    LocalServerCrashedError,
    LockViolationError,
    MalformedResponseError,
    OTelNotInstalledError,
    ParamDroppedError,
    ProbeError,
    SeedLockError,
    StoreError,
    StoreVersionError,
    UnsupportedModelError,
    UnusableSeedError,
)
from langchain_seedlock._events import configure_logging
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._otel import SeedLockOTel
from langchain_seedlock._store import BaselineStore, open_store

if TYPE_CHECKING:
    from langchain_seedlock._middleware import SeedLockMiddleware
    from langchain_seedlock._otel_processor import SeedLockSpanProcessor
    from langchain_seedlock.local import LocalServer
    from langchain_seedlock.probe import ProbeResult, run_probe

try:
    __version__ = metadata.version(__package__ or "langchain-seedlock")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


# Imported on first use, not on `import langchain_seedlock`: the middleware
# needs the `agents` extra (langchain); the local server (`local/`) and the
# probe with its renderers (`probe/`, rich) live outside the core package,
# for `seedlock probe` / `seedlock serve` and their Python equivalents; the
# span processor needs the `otel` extra (the OpenTelemetry SDK).
# tests/unit_tests/test_import_cost.py keeps these modules out of the import.
_LAZY: dict[str, str] = {
    "LocalServer": "langchain_seedlock.local",
    "ProbeResult": "langchain_seedlock.probe",
    "SeedLockMiddleware": "langchain_seedlock._middleware",
    "SeedLockSpanProcessor": "langchain_seedlock._otel_processor",
    "run_probe": "langchain_seedlock.probe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_seedlock' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BackendUnavailableError",
    "BaselineStore",
    "DriftMonitor",
    "InvalidArgumentError",
    "InvalidLockError",
    "LocalServer",
    "LocalServerCrashedError",
    "LockViolationError",
    "LockedAzureChatOpenAI",
    "LockedChatModel",
    "LockedChatOpenAI",
    "MalformedResponseError",
    "OTelNotInstalledError",
    "ParamDroppedError",
    "ProbeError",
    "ProbeResult",
    "SeedLock",
    "SeedLockCallbackHandler",
    "SeedLockError",
    "SeedLockMiddleware",
    "SeedLockOTel",
    "SeedLockSpanProcessor",
    "StoreError",
    "StoreVersionError",
    "UnsupportedModelError",
    "UnusableSeedError",
    "__version__",
    "auto_attached_handler",
    "configure_logging",
    "disable_auto_attach",
    "enable_auto_attach",
    "lock_model",
    "open_store",
    "run_probe",
]
