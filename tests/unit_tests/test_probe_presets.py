"""The probe's presets (cookbook, batch-invariance, seed-honored) and the
report every probe ends with, against the fake OpenAI-compatible backend."""

from __future__ import annotations

import html
import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from langchain_seedlock import ProbeError, open_store
from langchain_seedlock.cli import main
from langchain_seedlock.probe import (
    PresetResult,
    run_batch_invariance,
    run_cookbook,
    run_seed_honored,
)
from langchain_seedlock.probe._presets import COOKBOOK_MESSAGES, seed_verdict
from langchain_seedlock.testing import FakeBackend

SYSTEM, USER = (content for _, content in COOKBOOK_MESSAGES)
LONG = "Mars " * 60  # longer than any excerpt


@pytest.fixture(autouse=True)
def _no_ambient_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "SEEDLOCK_STORE"):
        monkeypatch.delenv(name, raising=False)


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


def _max_tokens(body: dict[str, Any]) -> int:
    return int(body.get("max_tokens") or body.get("max_completion_tokens"))


# -- cookbook -------------------------------------------------------------------------
def test_cookbook_sends_the_cookbook_protocol(stub: FakeBackend) -> None:
    store = open_store("memory://")
    result = run_cookbook(model="m", base_url=stub.base_url, api_key="sk-test", store=store)
    assert len(stub.requests) == 10
    arm1, arm2 = stub.requests[:5], stub.requests[5:]
    for body in stub.requests:
        assert _messages(body) == [("system", SYSTEM), ("user", USER)]
        assert _max_tokens(body) == 200
    assert all("seed" not in b and b["temperature"] == 0.7 for b in arm1)
    assert all(b["seed"] == 123 and b["temperature"] == 0 for b in arm2)
    unseeded, seeded = result.groups
    assert (unseeded.distinct, seeded.distinct) == (5, 1)
    assert seeded.mean_pairwise_distance == 0.0
    assert unseeded.mean_pairwise_distance > 0.0
    # the seeded arm went through the lock and the handler: its baselines are stored
    request_hash = seeded.runs[0].request_hash
    assert request_hash is not None
    assert sum(o.count for o in store.outputs_for(request_hash)) == 5
    assert unseeded.runs[0].request_hash is None
    assert result.verdict.startswith("seed honoured: 5/5 identical with seed 123")
    assert "without seed at 0.7: 5/5 distinct" in result.verdict
    assert "(cookbook 0.1137 -> 0.0449)" in result.verdict
    assert result.passed(1.0)


def test_cookbook_prints_the_cookbook_figures_beside_ours(stub: FakeBackend) -> None:
    result = run_cookbook(model="m", base_url=stub.base_url, runs=2, store="memory://")
    rows = {row[0]: row[1:] for row in result.summary_rows}
    assert rows["distinct outputs"] == ("2/2", "1/2", "—", "3/5")
    distance = rows["mean pairwise distance (text)"]
    assert distance[2:] == ("0.1137", "0.0449")
    assert rows["fingerprints"][1:] == ("1: fp_stub_1", "—", "1")
    text = result.to_text()
    assert "0.1137" in text
    assert "1 - difflib ratio" in text  # says which distance, and how it relates
    assert "cosine distances between OpenAI embeddings" in text


def test_cookbook_seed_that_does_not_reproduce(stub: FakeBackend) -> None:
    stub.variants = [("first variant", 1.0), ("second variant", 1.0), ("third", 1.0)]
    result = run_cookbook(model="m", base_url=stub.base_url, runs=5, store="memory://")
    seeded = result.groups[1]
    assert seeded.distinct > 1
    assert result.verdict.startswith(f"seed not reproducing: {seeded.distinct} distinct of 5")
    assert not result.passed(1.0)


# -- batch-invariance ------------------------------------------------------------------
class _BatchSensitive:
    """A reply that changes when other requests are in flight: a backend that
    is not batch-invariant (the text after ``stable prefix`` varies)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            self.in_flight += 1
            alone = self.in_flight == 1
        time.sleep(0.05)  # stay in flight while the others arrive
        with self.lock:
            self.in_flight -= 1
        return "stable prefix" if alone else f"stable prefix, batched {random.random()}"


def test_batch_invariance_counts_distinct_completions_per_concurrency(stub: FakeBackend) -> None:
    stub.reply = _BatchSensitive()
    progress: list[tuple[str, int, int]] = []
    result = run_batch_invariance(
        model="m", base_url=stub.base_url, runs=4, levels=(1, 4), max_tokens=16,
        server={"kind": "stub"}, progress=lambda *a: progress.append(a),
    )  # fmt: skip
    assert len(stub.requests) == 8
    for body in stub.requests:
        assert body["temperature"] == 0
        assert body["seed"] == 123
        assert _messages(body) == [("system", SYSTEM), ("user", USER)]
    alone, loaded = result.groups
    assert (alone.concurrency, alone.distinct, alone.tarr) == (1, 1, 1.0)
    assert loaded.concurrency == 4
    assert loaded.distinct > 1
    assert loaded.tarr == 0.0
    assert loaded.first_divergence == len("stable prefix")
    assert result.verdict.startswith("NOT batch-invariant (distinct completions of 4 at ")
    assert f"concurrency 1, 4: 1, {loaded.distinct})" in result.verdict
    assert not result.passed(1.0)
    assert progress[-1] == ("concurrency 4", 8, 8)
    assert [p[1] for p in progress] == list(range(1, 9))
    assert "VLLM_BATCH_INVARIANT=1" in result.to_text()  # says which settings help


def test_batch_invariance_on_an_invariant_backend(stub: FakeBackend) -> None:
    result = run_batch_invariance(model="m", base_url=stub.base_url, runs=3, levels=(1, 2))
    assert [g.distinct for g in result.groups] == [1, 1]
    assert result.verdict.startswith("batch-invariant")
    assert result.passed(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 0}, "runs"),
        ({"levels": (1, 0)}, "concurrency levels"),
        ({"levels": ()}, "concurrency levels"),
        ({"local_setups": [("x", {})]}, "not both"),
    ],
)
def test_batch_invariance_bad_arguments(
    stub: FakeBackend, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProbeError, match=message):
        run_batch_invariance(model="m", base_url=stub.base_url, **kwargs)
    assert stub.requests == []


# -- seed-honored ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "second", "verdict"),
    [
        (["a", "a"], ["b", "b"], "honoured"),
        (["a", "a"], ["a", "a"], "ignored"),  # the seed changes nothing
        (["a", "b"], ["c", "d"], "ignored"),  # no seed reproduces
        (["a", "a"], ["b", "c"], "unstable"),
        (["a", "b"], ["c", "c"], "unstable"),
    ],
)
def test_seed_verdict(first: list[str], second: list[str], verdict: str) -> None:
    assert seed_verdict(first, second) == verdict


def test_seed_honored_by_a_seeded_backend(stub: FakeBackend) -> None:
    result = run_seed_honored(model="m", base_url=stub.base_url)
    assert [(b["seed"], b["temperature"]) for b in stub.requests] == [
        (123, 1.0), (123, 1.0), (124, 1.0), (124, 1.0),
    ]  # fmt: skip
    assert result.verdict == (
        "seed honoured: seed 123: 2/2 identical; seed 124: 2/2 identical; "
        "the two seeds differ (temperature 1)"
    )


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("the same whatever the seed", "ignored"),
        (lambda body: f"random {random.random()}", "ignored"),
        (lambda body: "fixed" if body["seed"] == 123 else f"random {random.random()}", "unstable"),
    ],
)
def test_seed_ignored_or_unstable(stub: FakeBackend, reply: Any, status: str) -> None:
    stub.reply = reply
    result = run_seed_honored(model="m", base_url=stub.base_url, runs=3)
    assert result.verdict.startswith(f"seed {status}: ")


# -- renderings -----------------------------------------------------------------------
def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "<script" not in page
    assert "title=" not in page  # nothing hidden in tooltips


def test_preset_html_json_and_full_answers(stub: FakeBackend) -> None:
    stub.reply = lambda body: f"<b>{LONG}</b>" if body.get("seed") else f"x {random.random()}"
    result = run_cookbook(model="m", base_url=stub.base_url, runs=2, store="memory://")
    page = result.to_html()
    _assert_self_contained(page)
    assert f"&lt;b&gt;{LONG}&lt;/b&gt;" in page  # the whole answer, escaped
    assert "higher is better" in page
    assert "lower is better" in page
    assert USER in page
    assert html.escape(result.verdict) in page
    for svg in re.findall(r"<svg.*?</svg>", page):
        assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    data = json.loads(result.to_json())
    assert data["schema"] == "seedlock.probe.preset/1"
    assert data["messages"] == [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": USER},
    ]  # fmt: skip
    assert data["groups"][1]["runs"][0]["text"] == f"<b>{LONG}</b>"
    assert data["verdict"] == result.verdict
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["started_at"])
    assert LONG.strip() not in result.to_text()
    assert f"<b>{LONG}</b>" in result.to_text(full=True)
    assert isinstance(result, PresetResult)
    assert result._repr_html_() in page


# -- the command ----------------------------------------------------------------------
def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("preset", ["cookbook", "batch-invariance", "seed-honored"])
def test_preset_command_ends_with_files_and_verdict(
    preset: str, stub: FakeBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_file, html_file = tmp_path / "p.json", tmp_path / "p.html"
    args = [
        "probe", "--preset", preset, "--base-url", stub.base_url, "--runs", "2",
        "--json", str(json_file), "--html", str(html_file),
    ]  # fmt: skip
    if preset == "batch-invariance":
        args += ["--levels", "1,2"]
    if preset == "cookbook":
        args += ["--store", "memory://"]
    assert main(args) == 0
    captured = capsys.readouterr()
    *_, files, verdict = _lines(captured.out)
    data = json.loads(json_file.read_text())
    assert verdict == data["verdict"]
    assert f"{json_file} (JSON)" in files
    assert f"{html_file} (HTML)" in files
    store = "baselines in memory://" if preset == "cookbook" else "no baselines"
    assert store in files
    assert f"user: {USER}" in captured.out  # the prompt is shown
    assert "started 20" in captured.out  # with a timestamp
    assert "server: kind=openai-compatible" in captured.out
    assert "seedlock probe: " in captured.err  # progress, outside a terminal: one line per phase
    _assert_self_contained(html_file.read_text())


def test_preset_command_json_to_stdout(
    stub: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["probe", "--preset", "seed-honored", "--base-url", stub.base_url, "--json", "-"]) == 0
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["preset"] == "seed-honored"
    assert _lines(captured.err)[-1].startswith("seed honoured: ")


def test_preset_command_full(stub: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply = LONG
    base = ["probe", "--preset", "seed-honored", "--base-url", stub.base_url]
    assert main(base) == 0
    assert LONG.strip() not in capsys.readouterr().out
    assert main([*base, "--full"]) == 0
    assert LONG.strip() in capsys.readouterr().out


def test_preset_command_fail_under(stub: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply = _BatchSensitive()
    args = ["probe", "--preset", "batch-invariance", "--base-url", stub.base_url, "--runs", "4"]
    assert main([*args, "--levels", "1,4", "--fail-under", "1"]) == 3
    captured = capsys.readouterr()
    assert _lines(captured.out)[-1].startswith("NOT batch-invariant")
    assert "below --fail-under 100%" in captured.err


@pytest.mark.parametrize(
    ("preset", "bad"),
    [
        ("cookbook", ["--prompt", "other"]),
        ("cookbook", ["--temperature", "0.3"]),
        ("batch-invariance", ["--store", "memory://"]),
        ("batch-invariance", ["--concurrency", "4"]),
        ("seed-honored", ["--levels", "1,2"]),
        ("batch-invariance", ["--levels", "1,0"]),
        ("batch-invariance", ["--levels", "one"]),
        ("batch-invariance", ["--local", "--slots", "4"]),
        ("batch-invariance", ["--local", "--no-cache-prompt"]),
        ("nonsense", []),
    ],
)
def test_preset_command_refuses_options_it_does_not_take(
    preset: str, bad: list[str], stub: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--preset", preset, "--base-url", stub.base_url, *bad])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert stub.requests == []


def test_default_probe_report(
    stub: FakeBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub.reply = lambda body: LONG if body.get("seed") else f"{LONG} {random.random()}"
    html_file = tmp_path / "p.html"
    args = ["probe", "--base-url", stub.base_url, "--runs", "2", "--store", "memory://"]
    assert main([*args, "--html", str(html_file)]) == 0
    out = capsys.readouterr().out
    *_, files, verdict = _lines(out)
    assert verdict == "seed honoured: 2/2 identical with seed 123; without seed 2/2 distinct"
    assert files == f"files: {html_file} (HTML); baselines in memory://"
    assert "prompt: Write a short story" in out
    assert LONG.strip() not in out
    page = html_file.read_text()
    _assert_self_contained(page)
    assert LONG.strip() in page
    assert "higher is better" in page
    assert verdict in page
    assert main([*args, "--full"]) == 0
    assert LONG.strip() in capsys.readouterr().out
