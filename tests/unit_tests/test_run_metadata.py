"""The handler's keys reach the tracers' runs before they are posted.

`LangChainTracer` runs against a langsmith `Client` whose HTTP session records
requests instead of sending them; the run collector keeps `Run` objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.context import tracing_v2_enabled
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_openai import ChatOpenAI
from langsmith import Client

from langchain_seedlock import SeedLockCallbackHandler
from tests._fixtures.stub_openai import StubOpenAI

KEYS = (
    "system_fingerprint",
    "gen_ai.request.seed",
    "seedlock.request_hash",
    "seedlock.output_hash",
)


class RecordingSession(requests.Session):
    """A requests session that records every request and answers 200 {}."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        data = kwargs.get("data")
        body = json.loads(data) if isinstance(data, bytes | str) and data else {}
        self.sent.append((method, str(url), body))
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.url = str(url)
        return response

    def llm_patches(self) -> list[dict[str, Any]]:
        """The PATCH bodies of llm runs (what the tracer posts at the end)."""
        return [b for m, _, b in self.sent if m == "PATCH" and b.get("run_type") == "llm"]


@pytest.fixture
def session() -> RecordingSession:
    return RecordingSession()


@pytest.fixture
def tracer(session: RecordingSession) -> Iterator[LangChainTracer]:
    client = Client(
        api_url="http://127.0.0.1:9", api_key="ls-test", session=session, auto_batch_tracing=False
    )
    tracer = LangChainTracer(client=client, project_name="seedlock-tests")
    yield tracer
    tracer.wait_for_futures()


@pytest.fixture
def handler() -> Iterator[SeedLockCallbackHandler]:
    h = SeedLockCallbackHandler()
    yield h
    h.close()


def make_model(stub: StubOpenAI) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=5, max_retries=0
    )


def chain_of(model: ChatOpenAI) -> Any:
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | model


def assert_keys(metadata: dict[str, Any], fingerprint: str = "fp_stub_1") -> None:
    assert metadata["system_fingerprint"] == fingerprint
    assert metadata["gen_ai.request.seed"] == 5
    assert len(metadata["seedlock.request_hash"]) == 64
    assert len(metadata["seedlock.output_hash"]) == 64


def test_run_collector_direct_invoke(stub: StubOpenAI, handler: SeedLockCallbackHandler) -> None:
    collector = RunCollectorCallbackHandler()
    make_model(stub).invoke("hi", config={"callbacks": [handler, collector]})
    (run,) = collector.traced_runs
    assert_keys(run.metadata)


async def test_run_collector_ainvoke_and_astream(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    collector = RunCollectorCallbackHandler()
    model = make_model(stub)
    await model.ainvoke("hi", config={"callbacks": [handler, collector]})
    stub.fingerprint = "fp_stream"
    async for _ in model.astream("hi", config={"callbacks": [handler, collector]}):
        pass
    first, second = collector.traced_runs
    assert_keys(first.metadata)
    assert_keys(second.metadata, "fp_stream")
    assert first.metadata["seedlock.request_hash"] == second.metadata["seedlock.request_hash"]


def test_langchain_tracer_in_a_chain(
    stub: StubOpenAI,
    handler: SeedLockCallbackHandler,
    tracer: LangChainTracer,
    session: RecordingSession,
) -> None:
    chain_of(make_model(stub)).invoke({"q": "hi"}, config={"callbacks": [handler, tracer]})
    tracer.wait_for_futures()
    (patch,) = session.llm_patches()
    assert_keys(patch["extra"]["metadata"])
    # the seed LangChain already copies from the invocation params is still there
    assert patch["extra"]["metadata"]["seed"] == 5


async def test_langchain_tracer_in_a_chain_async_stream(
    stub: StubOpenAI,
    handler: SeedLockCallbackHandler,
    tracer: LangChainTracer,
    session: RecordingSession,
) -> None:
    stub.fingerprint_chunks = "last"
    chain = chain_of(make_model(stub))
    async for _ in chain.astream({"q": "hi"}, config={"callbacks": [handler, tracer]}):
        pass
    await chain.ainvoke({"q": "hi"}, config={"callbacks": [handler, tracer]})
    tracer.wait_for_futures()
    patches = session.llm_patches()
    assert len(patches) == 2
    for patch in patches:
        assert_keys(patch["extra"]["metadata"])


def test_tracer_enabled_by_context_comes_after_the_handler(
    stub: StubOpenAI, handler: SeedLockCallbackHandler, session: RecordingSession
) -> None:
    client = Client(
        api_url="http://127.0.0.1:9", api_key="ls-test", session=session, auto_batch_tracing=False
    )
    with tracing_v2_enabled(project_name="seedlock-tests", client=client) as cb:
        chain_of(make_model(stub)).invoke({"q": "hi"}, config={"callbacks": [handler]})
        cb.wait_for_futures()
    (patch,) = session.llm_patches()
    assert_keys(patch["extra"]["metadata"])


def test_batch_of_prompts_in_one_generate_each_run_gets_its_own(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    # One generate() call with two prompts shares one metadata dict between the
    # two runs: the handler must not write one run's keys into the other's.
    collector = RunCollectorCallbackHandler()
    from langchain_core.messages import HumanMessage

    make_model(stub).generate(
        [[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler, collector]
    )
    assert len(collector.traced_runs) == 2
    assert all("seedlock.output_hash" not in r.metadata for r in collector.traced_runs)


@pytest.mark.xfail(
    reason="a chat model invoked outside any runnable gives a callback handler no way to "
    "reach LangChainTracer's run (it copies the metadata dict); locked models stamp it",
    strict=True,
)
def test_langchain_tracer_direct_invoke_known_gap(
    stub: StubOpenAI,
    handler: SeedLockCallbackHandler,
    tracer: LangChainTracer,
    session: RecordingSession,
) -> None:
    make_model(stub).invoke("hi", config={"callbacks": [handler, tracer]})
    tracer.wait_for_futures()
    (patch,) = session.llm_patches()
    assert_keys(patch["extra"]["metadata"])
