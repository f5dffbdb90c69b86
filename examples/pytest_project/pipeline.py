"""A small chain and a small agent, written without any seedlock code.

Their tests (tests/test_pipeline.py) become regression tests with
``pytest --seedlock=record`` once, then ``pytest`` (verify) in CI: the
langchain-seedlock pytest plugin locks and observes the models.

The model server: any OpenAI-compatible endpoint, ``PIPELINE_BASE_URL``
(default: a local ``seedlock serve`` on port 8080).
"""

from __future__ import annotations

import os
from typing import Any

from langchain.agents import create_agent
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


def model() -> ChatOpenAI:
    return ChatOpenAI(
        model=os.environ.get("PIPELINE_MODEL", "smollm2"),
        base_url=os.environ.get("PIPELINE_BASE_URL", "http://127.0.0.1:8080/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "none"),
        max_tokens=40,
        max_retries=0,
    )


def build_chain() -> Runnable[dict[str, str], str]:
    """Summarise a topic in one sentence."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in one short sentence."), ("human", "Tell me about {topic}.")]
    )
    return prompt | model() | StrOutputParser()


@tool
def planet_count() -> int:
    """How many planets the solar system has."""
    return 8


def build_agent() -> Any:
    """A one-tool agent (LangChain v1 ``create_agent``)."""
    return create_agent(model(), [planet_count], system_prompt="You are a terse astronomer.")
