from __future__ import annotations

import langchain_seedlock

EXPECTED_ALL = [
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


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_seedlock.__all__)
    for name in langchain_seedlock.__all__:
        assert getattr(langchain_seedlock, name) is not None


def test_version_is_a_string() -> None:
    assert isinstance(langchain_seedlock.__version__, str)
    assert langchain_seedlock.__version__.count(".") >= 2
