"""The seeds `lock_model` refuses for an OpenAI-compatible server really are random
on llama.cpp (docs/providers.md, the "OpenAI-compatible server" row).

The requests go to the real server directly (the lock refuses these seeds):
a fixed seed repeats its answer; -1 and 4294967295 (LLAMA_DEFAULT_SEED) do not.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLock, UnusableSeedError, lock_model
from langchain_seedlock._providers import OPENAI_COMPATIBLE
from langchain_seedlock.local import MODEL_NAME, LocalServer

pytestmark = pytest.mark.llama

PROMPT = "Invent a name for a new planet and describe it in one sentence."
CALLS = 4


def _answer(server: LocalServer, seed: int) -> str:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": PROMPT}],
        "seed": seed,
        "temperature": 1.0,
        "max_tokens": 24,
    }
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # loopback only
        answer = json.load(response)
    return str(answer["choices"][0]["message"]["content"])


def test_a_fixed_seed_repeats_and_the_refused_seeds_do_not(llama_server: LocalServer) -> None:
    assert len({_answer(llama_server, 1234) for _ in range(CALLS)}) == 1
    for seed in OPENAI_COMPATIBLE.random_seeds:
        answers = {_answer(llama_server, seed) for _ in range(CALLS)}
        assert len(answers) > 1, f"seed {seed} gave the same answer {CALLS} times"


def test_lock_model_refuses_them_for_the_local_server(llama_server: LocalServer) -> None:
    model = ChatOpenAI(model=MODEL_NAME, base_url=llama_server.base_url, api_key="none")
    for seed in OPENAI_COMPATIBLE.random_seeds:
        with pytest.raises(UnusableSeedError):
            lock_model(model, SeedLock(seed=seed))
