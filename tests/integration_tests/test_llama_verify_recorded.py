"""``seedlock verify --recorded`` on the real model: a chain (system + user
messages) recorded with ``capture_content=True`` is re-sent as recorded and
reproduces; against a server started with flash attention off (declared by
``LocalServer``) the new answers are explained by the backend change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_seedlock import LocalServer, LockedChatOpenAI, SeedLock, SeedLockCallbackHandler
from langchain_seedlock.cli import main
from langchain_seedlock.local import MODEL_NAME

pytestmark = pytest.mark.llama


def test_a_recorded_chain_is_resent_and_compared(
    tmp_path: Path,
    llama_server: LocalServer,
    llama_server_factory: Callable[..., LocalServer],
    capsys: pytest.CaptureFixture[str],
    llama_report: Callable[[str], None],
) -> None:
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    model = LockedChatOpenAI(
        model=MODEL_NAME, base_url=llama_server.base_url, api_key="none",
        lock=SeedLock(seed=7, temperature=0.7, max_tokens=24),
    )  # fmt: skip
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), ("user", "Name a fact about {x}.")]
    )
    chain = prompt | model | StrOutputParser()
    with SeedLockCallbackHandler(store=url, capture_content=True) as handler:
        for x in ("Mars", "the Moon"):
            chain.invoke({"x": x}, config={"callbacks": [handler]})
    capsys.readouterr()

    args = ["verify", "--store", url, "--recorded", "--base-url"]
    assert main([*args, llama_server.base_url]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 2, out

    no_fa = llama_server_factory(slots=1, cache_prompt=False, flash_attn="off")
    code = main([*args, no_fa.base_url])
    out = capsys.readouterr().out
    assert code == 0, out  # explained drift passes unless --strict
    assert "DRIFT" not in out
    explained = out.count("EXPLAINED")
    assert main([*args, no_fa.base_url, "--strict"]) == (3 if explained else 0)
    llama_report(f"verify --recorded: 2 OK on the recording server; flash attention off: "
                 f"{explained} of 2 explained")  # fmt: skip
