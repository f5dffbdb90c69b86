"""Ordinary tests of the chain and the agent: the seedlock marker is the only addition.

``@pytest.mark.seedlock`` locks every chat model built inside these tests to
seed 7 and temperature 0.8 (a temperature where sampling matters), and
compares their outputs with ``tests/__seedlock__/test_pipeline.jsonl``.
"""

from __future__ import annotations

import pytest
from pipeline import build_agent, build_chain

pytestmark = pytest.mark.seedlock(seed=7, temperature=0.8)


@pytest.mark.parametrize("topic", ["Mars", "the Moon"])
def test_chain_answers(topic: str) -> None:
    answer = build_chain().invoke({"topic": topic})
    assert answer.strip()


def test_agent_answers() -> None:
    result = build_agent().invoke({"messages": [("user", "How many planets are there?")]})
    assert result["messages"][-1].content.strip()
