from __future__ import annotations

import langchain_seedlock

EXPECTED_ALL = [
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
    "BaselineStore",
    "open_store",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_seedlock.__all__)
    for name in langchain_seedlock.__all__:
        assert getattr(langchain_seedlock, name) is not None


def test_version_is_a_string() -> None:
    assert isinstance(langchain_seedlock.__version__, str)
    assert langchain_seedlock.__version__.count(".") >= 2
