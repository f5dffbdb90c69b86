"""The probe engine: statistics, results, JSON/HTML, against the stub server."""

from __future__ import annotations

import json
import random
import re
from typing import Any
from xml.etree import ElementTree

import pytest
from langchain_core.embeddings import Embeddings
from structlog.testing import capture_logs

from langchain_seedlock._errors import BackendUnavailableError, ProbeError
from langchain_seedlock._store import open_store
from langchain_seedlock.probe import ProbeResult, run_probe
from langchain_seedlock.probe._stats import (
    cosine_distance,
    exact_match_rate,
    first_divergence,
    mean_pairwise,
    text_distance,
)
from tests._fixtures.stub_openai import StubOpenAI


# -- statistics -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("outputs", "rate"),
    [
        (["a", "a", "a", "a"], 1.0),
        (["a", "a", "a", "b"], 0.75),
        (["a", "b", "a", "b"], 0.5),
        (["a", "b", "c", "d"], 0.25),
        ([], 0.0),
    ],
)
def test_exact_match_rate_is_share_of_most_common_output(outputs: list[str], rate: float) -> None:
    assert exact_match_rate(outputs) == rate


@pytest.mark.parametrize(
    ("outputs", "index"),
    [
        (["same", "same"], None),
        (["abcX", "abcY", "abcX"], 3),
        (["Xbc", "Ybc"], 0),
        (["abc", "abcdef"], 3),  # a prefix: they diverge where the shorter one ends
        (["only"], None),
    ],
)
def test_first_divergence(outputs: list[str], index: int | None) -> None:
    assert first_divergence(outputs) == index


def test_text_distance_bounds() -> None:
    assert text_distance("same text", "same text") == 0.0
    assert text_distance("aaaa", "bbbb") == 1.0
    d = text_distance("the cat sat", "the cat ran")
    assert 0.0 < d < 0.5


def test_cosine_distance() -> None:
    assert cosine_distance([1.0, 0.0], [2.0, 0.0]) == pytest.approx(0.0)
    assert cosine_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert cosine_distance([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(2.0)
    assert cosine_distance([0.0, 0.0], [0.0, 0.0]) == 0.0


def test_mean_pairwise_averages_all_pairs() -> None:
    # pairs: (0,1)=1, (0,2)=2, (1,2)=1 -> mean 4/3
    assert mean_pairwise([0, 1, 2], lambda a, b: abs(a - b)) == pytest.approx(4 / 3)
    assert mean_pairwise(["one"], text_distance) == 0.0


# -- run_probe against the stub ------------------------------------------------------
def _probe(stub: StubOpenAI, **kwargs: Any) -> ProbeResult:
    kwargs.setdefault("runs", 4)
    kwargs.setdefault("store", "memory://")
    return run_probe(model="stub-model", base_url=stub.base_url, api_key="sk-test", **kwargs)


def test_two_arms_same_params_only_seed_differs(stub: StubOpenAI) -> None:
    result = _probe(stub, runs=3, seed=42, temperature=0.3, max_tokens=20)
    assert len(stub.requests) == 6
    unseeded, seeded = stub.requests[:3], stub.requests[3:]
    assert all("seed" not in body for body in unseeded)
    assert all(body["seed"] == 42 for body in seeded)
    for body in stub.requests:
        assert body["temperature"] == 0.3
        assert (body.get("max_tokens") or body.get("max_completion_tokens")) == 20
        assert body["messages"][-1]["content"] == result.prompt


def test_statistics_of_a_deterministic_seeded_backend(stub: StubOpenAI) -> None:
    result = _probe(stub, runs=4)
    seeded, unseeded = result.seeded, result.unseeded
    assert seeded.exact_match_rate == 1.0
    assert seeded.distinct_outputs == 1
    assert seeded.mean_pairwise_distance == 0.0
    assert seeded.first_divergence is None
    assert unseeded.exact_match_rate == 0.25
    assert unseeded.distinct_outputs == 4
    assert unseeded.mean_pairwise_distance > 0.0
    # the stub's unseeded replies are "unseeded 0.<12 random digits> ..."
    assert unseeded.first_divergence is not None
    assert unseeded.first_divergence >= len("unseeded 0.")
    assert seeded.fingerprints == unseeded.fingerprints == ("fp_stub_1",)
    run = seeded.runs[0]
    assert (run.prompt_tokens, run.completion_tokens) == (11, 7)
    assert run.seed == 123
    assert run.system_fingerprint == "fp_stub_1"
    assert run.request_hash  # from the locked model's metadata
    assert run.output_hash
    assert result.passed(1.0)


def test_fingerprints_seen_in_order(stub: StubOpenAI) -> None:
    fps = iter(["fp_a", "fp_b", "fp_a", "fp_c"] * 2)

    def reply(body: dict[str, Any]) -> str:
        stub.fingerprint = next(fps)
        return "same"

    stub.reply = reply
    result = _probe(stub, runs=4)
    assert result.unseeded.fingerprints == ("fp_a", "fp_b", "fp_c")


def test_a_seeded_backend_that_drifts_fails_the_gate(stub: StubOpenAI) -> None:
    stub.reply = lambda body: random.choice(["red", "green", "blue", "cyan", "pink"]) * 3
    result = _probe(stub, runs=5)
    assert result.seeded.exact_match_rate < 1.0
    assert not result.passed(1.0)
    assert result.passed(0.0)


def test_concurrency_keeps_run_order_and_count(stub: StubOpenAI) -> None:
    stub.delay = 0.05
    calls: list[tuple[str, int, int]] = []
    result = _probe(stub, runs=6, concurrency=3, progress=lambda *a: calls.append(a))
    assert [r.index for r in result.seeded.runs] == list(range(6))
    assert len(stub.requests) == 12
    assert calls[-1] == ("seeded", 6, 6)
    assert [c[1] for c in calls if c[0] == "unseeded"] == [1, 2, 3, 4, 5, 6]


class _LengthEmbeddings(Embeddings):
    """Embeds a text as (len, count of 'e'): enough to test the cosine path."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), float(t.count("e"))] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_embedding_distance(stub: StubOpenAI) -> None:
    result = _probe(stub, runs=3, embeddings=_LengthEmbeddings())
    assert result.seeded.distance_kind == "cosine"
    assert result.seeded.mean_pairwise_distance == pytest.approx(0.0)


def test_seeded_arm_writes_baselines_and_events(stub: StubOpenAI) -> None:
    store = open_store("memory://")
    with capture_logs() as logs:
        result = _probe(stub, runs=3, store=store)
    request_hash = result.seeded.runs[0].request_hash
    assert request_hash is not None
    outputs = store.outputs_for(request_hash)
    assert sum(o.count for o in outputs) == 3
    calls = [e for e in logs if e["event"] == "seedlock.call"]
    assert len(calls) == 3  # the unseeded arm runs without the handler


def test_unreachable_backend_raises_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        run_probe(model="m", base_url="http://127.0.0.1:9/v1", api_key="k", runs=1)


def test_server_error_raises_probe_error(stub: StubOpenAI) -> None:
    stub.status = 400
    with pytest.raises(ProbeError, match="unseeded run 1 failed"):
        _probe(stub, runs=1)


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"concurrency": 0}])
def test_invalid_arguments(stub: StubOpenAI, kwargs: dict[str, int]) -> None:
    with pytest.raises(ProbeError):
        _probe(stub, **kwargs)


# -- renderings ----------------------------------------------------------------------
def test_to_dict_is_json_and_complete(stub: StubOpenAI) -> None:
    result = _probe(stub, runs=2)
    data = json.loads(result.to_json())
    assert data["schema"] == "seedlock.probe/1"
    assert data["settings"] == {
        "runs": 2, "seed": 123, "temperature": 0.7, "max_tokens": 64, "concurrency": 1,
    }  # fmt: skip
    seeded = data["arms"]["seeded"]
    assert seeded["exact_match_rate"] == 1.0
    assert seeded["fingerprints"] == ["fp_stub_1"]
    assert len(seeded["runs"]) == 2
    run = seeded["runs"][0]
    assert {"text", "system_fingerprint", "prompt_tokens", "completion_tokens", "seed"} <= set(run)
    assert "sk-test" not in result.to_json()


def test_html_is_self_contained_with_chart(stub: StubOpenAI) -> None:
    stub.reply = lambda body: "<script>alert(1)</script>" if body.get("seed") else "x"
    result = _probe(stub, runs=2)
    page = result.to_html()
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "</svg>" in page
    assert "<script>" not in page  # model output is escaped
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # no external assets
    assert "exact-match rate" in page
    assert result._repr_html_() in page
    svg = ElementTree.fromstring(result.to_svg())  # well-formed, standalone SVG
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


def test_rich_and_text_rendering(stub: StubOpenAI) -> None:
    from rich.console import Console

    result = _probe(stub, runs=2)
    console = Console(record=True, width=120)
    console.print(result)
    out = console.export_text()
    assert "exact-match rate" in out
    assert "fp_stub_1" in out
    text = result.to_text()
    assert "100%" in text
    assert "seeded" in text
