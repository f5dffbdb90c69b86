"""langchain-tests standard integration suite for LockedChatOpenAI, against the stub server.

No machine here reaches OpenAI; the stub speaks the Chat Completions protocol
over real HTTP. Features the stub cannot produce are xfailed with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_seedlock import LockedChatOpenAI, SeedLock
from tests._fixtures.stub_openai import StubOpenAI

_STUB = StubOpenAI().start()


class TestLockedChatOpenAIIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return LockedChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": "gpt-4o-mini",
            "api_key": "sk-test",
            "base_url": _STUB.base_url,
            "stream_usage": True,
            "lock": SeedLock(seed=7, temperature=0),
        }

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "gpt-4o"

    @pytest.mark.xfail(
        reason=(
            "json mode asks for a schema described in the prompt text; the stub server "
            "answers a fixed JSON object. json_object on the wire is tested in test_chat_models."
        ),
        strict=True,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
