"""``seedlock verify --recorded``: a chain's own requests (system message, user
message, tools) recorded with ``capture_content=True``, re-sent against the
fake backend and compared by variant and backend identity."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLock, SeedLockCallbackHandler
from langchain_seedlock._store import open_store
from langchain_seedlock.cli import main
from tests._fixtures.stub_openai import StubOpenAI


@pytest.fixture(autouse=True)
def _no_ambient_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "SEEDLOCK_STORE"):
        monkeypatch.delenv(name, raising=False)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


MESSAGES = [SystemMessage("You answer tersely."), HumanMessage("What is 2 plus 3?")]


def _record(stub: StubOpenAI, store: str, *, capture: bool = True, runs: int = 2) -> None:
    """A chain with a system message, a user message and tools, observed."""
    model = ChatOpenAI(
        model="stub-model", base_url=stub.base_url, api_key="sk-secret-key",
        seed=7, temperature=0.0, default_headers={"X-Api-Token": "header-secret"},
    )  # fmt: skip
    with SeedLockCallbackHandler(
        store=store, lock=SeedLock(seed=7, temperature=0.0), capture_content=capture
    ) as handler:
        for _ in range(runs):
            model.bind_tools([add]).invoke(MESSAGES, config={"callbacks": [handler]})
        prose = ChatOpenAI(
            model="stub-model", base_url=stub.base_url, api_key="sk-secret-key",
            seed=7, temperature=0.0,
        )  # fmt: skip
        for _ in range(runs):
            prose.invoke(MESSAGES, config={"callbacks": [handler]})


def _verify(stub: StubOpenAI, store: str, *extra: str) -> int:
    return main(["verify", "--recorded", "--base-url", stub.base_url, "--store", store, *extra])


def test_recorded_chain_verifies(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store)
    sent = len(stub.requests)
    assert _verify(stub, store) == 0
    out = capsys.readouterr().out
    assert out.count("OK") == 2, out
    resent = stub.requests[sent:]
    assert len(resent) == 2
    tools_call = next(b for b in resent if b.get("tools"))
    assert tools_call["messages"][0] == {"role": "system", "content": "You answer tersely."}
    assert tools_call["tools"][0]["function"]["name"] == "add"
    assert tools_call["seed"] == 7
    assert tools_call["temperature"] == 0
    # The payload rows hold the request, never the key or the headers.
    with open_store(store) as s:
        texts = [s.request_payload(h) or "" for h in s.payload_hashes()]
    assert len(texts) == 2
    assert all("sk-secret-key" not in t and "header-secret" not in t for t in texts)
    assert json.loads(texts[0])["messages"][0]["type"] == "system"


def test_new_variant_under_same_backend_fails(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store)
    with open_store(store) as s:
        hashes = s.payload_hashes()
    stub.reply = "a different answer, same fingerprint"
    assert _verify(stub, store) == 3
    out = capsys.readouterr().out
    drifted = [line for line in out.splitlines() if line.startswith("DRIFT")]
    assert len(drifted) == 1  # the tool call did not change; the prose did
    prose = next(h for h in hashes if h[:12] in drifted[0])
    assert "new variant under the same backend" in drifted[0]
    # only that request, by prefix
    assert _verify(stub, store, "--request", prose[:10]) == 3


def test_changed_backend_identity_is_explained(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store)
    stub.fingerprint = "fp_stub_2"
    stub.reply = "the new backend answers otherwise"
    assert _verify(stub, store) == 0
    captured = capsys.readouterr()
    assert "EXPLAINED" in captured.out
    assert "fingerprint then fp_stub_1, now fp_stub_2" in captured.out
    assert "explained" in captured.err
    assert _verify(stub, store, "--strict") == 3


def test_known_variant_passes(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    stub.variants = [("alpha", 1.0), ("beta", 1.0)]
    _record(stub, store, runs=12)
    assert _verify(stub, store, "--runs", "4") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert {line.split()[0] for line in lines} == {"OK", "KNOWN"}  # both variants seen, both pass


def test_capture_off_says_how_to_turn_it_on(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store, capture=False)
    sent = len(stub.requests)
    assert _verify(stub, store) == 1
    err = capsys.readouterr().err
    assert "holds no recorded request payloads" in err
    assert "capture_content=True" in err
    assert len(stub.requests) == sent  # nothing re-sent


def test_bad_usage(stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store, runs=1)
    assert _verify(stub, store, "--prompt", "hi") == 2
    assert "cannot be given with --recorded" in capsys.readouterr().err
    assert main(["verify", "--store", store, "--strict"]) == 2
    assert _verify(stub, store, "--request", "0123456789abcdef") == 1
    assert "matches no recorded payload" in capsys.readouterr().err
    assert _verify(stub, store, "--request", "abc") == 1  # too short to be a prefix


def test_hash_mismatch_is_refused(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A payload that would not hash as its request is not re-sent."""
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store, runs=1)
    with open_store(store) as s:
        h = s.payload_hashes()[0]
        text = s.request_payload(h) or ""
    doctored = json.loads(text)
    doctored["params"]["temperature"] = 0.5
    with sqlite3.connect(tmp_path / "chain.db") as conn:
        conn.execute(
            "UPDATE payloads SET payload = ? WHERE request_hash = ?", (json.dumps(doctored), h)
        )
    sent = len(stub.requests)
    assert _verify(stub, store, "--request", h) == 1
    out = capsys.readouterr().out
    assert "NOT RESENT" in out
    assert "would not be the same request" in out
    assert len(stub.requests) == sent


def test_recorded_agent_steps_verify(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SeedLockMiddleware with capture on: every step of an agent (the tool
    results in its history included) is re-sent as it was."""
    from langchain.agents import create_agent

    from langchain_seedlock import SeedLockMiddleware

    def one_tool(body: dict[str, Any]) -> list[dict[str, Any]] | None:
        done = any(m.get("role") == "tool" for m in body["messages"])
        return None if done else [{"name": "add", "arguments": {"a": 2, "b": 3}}]

    stub.tool_calls = one_tool
    store = f"sqlite:///{tmp_path / 'agent.db'}"
    model = ChatOpenAI(model="stub-model", base_url=stub.base_url, api_key="sk-x", max_retries=0)
    with SeedLockMiddleware(
        SeedLock(seed=11, temperature=0.0, max_tokens=64), store=store, capture_content=True
    ) as seedlock:
        agent = create_agent(model, [add], system_prompt="Use the tool.", middleware=[seedlock])
        agent.invoke({"messages": [{"role": "user", "content": "2 plus 3?"}]})
    sent = len(stub.requests)
    assert sent == 2  # the tool call, then the answer
    assert _verify(stub, store) == 0
    assert capsys.readouterr().out.count("OK") == 2
    resent = stub.requests[sent:]
    assert [m["role"] for m in resent[1]["messages"]] == ["system", "user", "assistant", "tool"]
    assert all(b["seed"] == 11 and b["tools"][0]["function"]["name"] == "add" for b in resent)
    stub.reply = "five, but worded otherwise"
    assert _verify(stub, store) == 3
    assert capsys.readouterr().out.count("DRIFT") == 1


def test_recorded_locked_model_verifies(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A locked model's request hash covers its final body: re-sent, that body
    hashes alike (structured output: the response format travels too)."""
    from langchain_seedlock import LockedChatOpenAI

    # A JSON schema (a Pydantic class is not JSON: such a request is not recorded).
    sum_schema = {
        "title": "Sum",
        "type": "object",
        "properties": {"total": {"type": "integer"}},
        "required": ["total"],
    }
    store = f"sqlite:///{tmp_path / 'locked.db'}"
    model = LockedChatOpenAI(
        model="stub-model", base_url=stub.base_url, api_key="sk-x",
        lock=SeedLock(seed=5, temperature=0.2, max_tokens=50),
    )  # fmt: skip
    with SeedLockCallbackHandler(store=store, capture_content=True) as handler:
        model.bind_tools([add]).invoke(MESSAGES, config={"callbacks": [handler]})
        model.with_structured_output(sum_schema, method="json_schema").invoke(
            MESSAGES, config={"callbacks": [handler]}
        )
    sent = len(stub.requests)
    assert _verify(stub, store) == 0
    assert capsys.readouterr().out.count("OK") == 2
    structured = next(b for b in stub.requests[sent:] if b.get("response_format"))
    assert structured["response_format"]["json_schema"]["name"] == "Sum"
    assert structured["seed"] == 5


def test_backend_down_or_failing(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store, runs=1)
    down = ["verify", "--recorded", "--base-url", "http://127.0.0.1:9/v1", "--store", store]
    assert main(down) == 4
    assert "cannot reach the model server" in capsys.readouterr().err
    stub.status = 500
    assert _verify(stub, store) == 1
    assert "failed: OpenAIAPIError: Error code: 500" in capsys.readouterr().err


def test_server_fields_count_in_the_backend_identity(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server describing itself (llama.cpp ``/props``): the same server
    reproduces; a restart with another build is an explained change."""
    from langchain_seedlock.testing import forget_server_info

    forget_server_info()
    stub.props = {"build_info": "b100-abc", "total_slots": 1}
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    _record(stub, store)
    forget_server_info()  # verify runs in a new process
    assert _verify(stub, store) == 0
    assert capsys.readouterr().out.count("OK") == 2
    forget_server_info()
    stub.props = {"build_info": "b200-def", "total_slots": 1}
    stub.reply = "another build answers otherwise"
    assert _verify(stub, store) == 0
    assert "EXPLAINED" in capsys.readouterr().out
    forget_server_info()


def test_declared_backend_settings_are_declared_for_the_verification_too(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chain that declared its backend (``SeedLock(backend=...)``) recorded
    under that identity: verified without the same declaration, a new
    answer would be "explained" by a backend change that did not happen."""
    store = f"sqlite:///{tmp_path / 'chain.db'}"
    model = ChatOpenAI(model="stub-model", base_url=stub.base_url, api_key="sk-x", seed=7)
    lock = SeedLock(seed=7, backend={"gpu": "A100", "kv_cache": "q8_0"})
    with SeedLockCallbackHandler(store=store, lock=lock, capture_content=True) as handler:
        model.invoke(MESSAGES, config={"callbacks": [handler]})
    assert _verify(stub, store, "--backend", "gpu=A100,kv_cache=q8_0") == 0
    assert capsys.readouterr().out.startswith("OK")
    stub.reply = "a new answer on the same declared backend"
    assert _verify(stub, store) == 0
    assert capsys.readouterr().out.startswith("EXPLAINED")  # another identity without them
    assert _verify(stub, store, "--backend", '{"gpu": "A100", "kv_cache": "q8_0"}') == 3
    assert capsys.readouterr().out.startswith("DRIFT")  # the same identity: a real change
    assert _verify(stub, store, "--backend", "gpu") == 2  # not k=v
    assert "--backend" in capsys.readouterr().err
    assert main(["verify", "--store", store, "--backend", "gpu=A100"]) == 2  # needs --recorded
