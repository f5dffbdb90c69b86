"""langchain-tests standard unit suite for the locked OpenAI models."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_seedlock import LockedChatOpenAI, SeedLock


class TestLockedChatOpenAIStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return LockedChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The suite sets temperature=0 itself: the lock must agree with it.
        return {
            "model": "gpt-4o-mini",
            "api_key": "sk-test",
            "lock": SeedLock(seed=7, temperature=0),
        }

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
        return (
            {"OPENAI_API_KEY": "sk-env", "OPENAI_API_BASE": "https://example.invalid/v1"},
            {"model": "gpt-4o-mini", "lock": SeedLock(seed=7)},
            {"openai_api_key": "sk-env", "openai_api_base": "https://example.invalid/v1"},
        )

    @pytest.mark.xfail(
        reason=(
            "langchain-core's loads() only admits classes in its own allowlist unless "
            "allowed_objects is passed; the suite calls it without. The round trip with "
            "allowed_objects=[LockedChatOpenAI] is tested in test_chat_models.py."
        ),
        raises=ValueError,
    )
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)
