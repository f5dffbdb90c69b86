"""``seedlock drift``: what the store knows, as tables or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock.cli import main
from tests._fixtures.stub_openai import StubOpenAI


@pytest.fixture
def recorded(stub: StubOpenAI, tmp_path: Path) -> str:
    """A SQLite store after a real sequence: a stable request, a drifting one, a new build."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    handler = SeedLockCallbackHandler(store=url)
    mini = ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=1)
    big = ChatOpenAI(model="gpt-4o", base_url=stub.base_url, api_key="sk-test", seed=1)
    config = {"callbacks": [handler]}
    mini.invoke("stable", config=config)
    mini.invoke("stable", config=config)
    stub.reply = "one"
    mini.invoke("drifting", config=config)
    stub.reply = "two"
    mini.invoke("drifting", config=config)  # unexplained drift
    stub.fingerprint = "fp_stub_2"
    stub.reply = "three"
    mini.invoke("drifting", config=config)  # explained drift
    big.invoke("other model", config=config)
    handler.close()
    assert handler.monitor.store is not None
    handler.monitor.store.close()
    return url


def test_json_report(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--store", recorded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["store"] == recorded
    fps = {(m["model"], m["system_fingerprint"]): m["calls"] for m in report["models"]}
    assert fps == {
        ("openai:gpt-4o-mini", "fp_stub_1"): 4,
        ("openai:gpt-4o-mini", "fp_stub_2"): 1,
        ("openai:gpt-4o", "fp_stub_2"): 1,
    }
    by_calls = sorted(
        (r["model"], r["calls"], r["distinct_outputs"], r["distinct_backends"],
         r["drift_events"], r["unexplained_drift_events"], r["reproducible"])
        for r in report["requests"]
    )  # fmt: skip
    assert by_calls == [
        ("openai:gpt-4o", 1, 1, 1, 0, 0, True),
        ("openai:gpt-4o-mini", 2, 1, 1, 0, 0, True),
        ("openai:gpt-4o-mini", 3, 3, 2, 2, 1, False),
    ]
    assert report["requests"][0]["model"] == "openai:gpt-4o"  # most recent first


def test_filter_by_model_and_limit(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--store", recorded, "--json", "--model", "gpt-4o"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {m["model"] for m in report["models"]} == {"openai:gpt-4o"}
    assert [r["model"] for r in report["requests"]] == ["openai:gpt-4o"]
    assert main(["drift", "--store", recorded, "--json", "--model", "openai:gpt-4o-mini"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["requests"]) == 2
    assert main(["drift", "--store", recorded, "--json", "--limit", "1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["requests"]) == 1


def test_tables(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--store", recorded]) == 0
    out = capsys.readouterr().out
    assert "Fingerprints per model" in out
    assert "fp_stub_2" in out
    assert "2 (1 unexplained)" in out


def test_missing_store_is_an_error_not_a_new_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.db"
    assert main(["drift", "--store", f"sqlite:///{path}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not path.exists()


def test_bad_limit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["drift", "--limit", "0"])
    assert info.value.code == 2


def test_backends_rate_and_tarr(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Under fp_stub_1: 'stable' 2 calls / 1 output, 'drifting' 2 calls / 2 outputs:
    2 repeat calls, 1 known (rate 50 %), TARr 1 of 2 requests."""
    assert main(["drift", "--store", recorded, "--json", "--model", "gpt-4o-mini"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {b["system_fingerprint"]: b for b in report["backends"]}
    assert set(rows) == {"fp_stub_1", "fp_stub_2"}
    one = rows["fp_stub_1"]
    assert (one["requests"], one["calls"], one["repeat_calls"]) == (2, 4, 2)
    assert (one["reproducibility_rate"], one["tarr"], one["tarr_requests"]) == (0.5, 0.5, 2)
    lo, hi = one["reproducibility_interval"]
    assert lo < 0.5 < hi
    two = rows["fp_stub_2"]
    assert (two["calls"], two["repeat_calls"], two["reproducibility_rate"], two["tarr"]) == (
        1, 0, None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fail_on", "code"), [(None, 0), ("new", 3), ("unexplained", 3), ("any", 3)]
)
def test_fail_on_exits_3_for_ci(
    recorded: str, capsys: pytest.CaptureFixture[str], fail_on: str | None, code: int
) -> None:
    args = ["drift", "--store", recorded] + (["--fail-on", fail_on] if fail_on else [])
    assert main(args) == code
    if code:
        assert "match --fail-on" in capsys.readouterr().err


def test_fail_on_new_ignores_explained_drift(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    with SeedLockCallbackHandler(store=url) as handler:
        model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", seed=1)
        model.invoke("q", config={"callbacks": [handler]})
        stub.fingerprint, stub.reply = "fp_other", "changed with the backend"
        model.invoke("q", config={"callbacks": [handler]})
    assert main(["drift", "--store", url, "--fail-on", "new"]) == 0
    assert main(["drift", "--store", url, "--fail-on", "unexplained"]) == 0
    assert main(["drift", "--store", url, "--fail-on", "any"]) == 3


def test_request_drill_down(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--store", recorded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    drifting = next(r for r in report["requests"] if r["calls"] == 3)["request_hash"]
    assert main(["drift", "--store", recorded, "--json", "--request", drifting[:10]]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["request_hash"] == drifting
    assert sorted(v["count"] for v in one["variants"]) == [1, 1, 1]
    assert {v["system_fingerprint"] for v in one["variants"]} == {"fp_stub_1", "fp_stub_2"}
    assert [e["seedlock.variant"] for e in one["events"]] == ["new", "new"]
    assert [e["seedlock.explained"] for e in one["events"]] == [False, True]
    # Distances to the usual output (the first of three equally frequent ones),
    # from the stored sketches: "one" vs "two" and "three" differ at char 0.
    by_hash = {v["output_hash"]: v for v in one["variants"]}
    usual = by_hash.pop(one["usual_output_hash"])
    assert (usual["divergence_at"], usual["similarity_estimate"]) == (None, None)
    assert [v["divergence_at"].startswith("[0, ") for v in by_hash.values()] == [True, True]
    assert [v["similarity_estimate"] for v in by_hash.values()] == [0.0, 0.0]
    assert main(["drift", "--store", recorded, "--request", drifting[:10]]) == 0
    assert "Variants" in capsys.readouterr().out
    assert main(["drift", "--store", recorded, "--request", "zzzz"]) == 1
    assert "no request" in capsys.readouterr().err


def test_changes_over_time(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The fingerprint change of the recorded sequence is on the timeline, once."""
    assert main(["drift", "--store", recorded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(c["event"], c["model"], c["change"]) for c in report["changes"]] == [
        ("seedlock.fingerprint_changed", "openai:gpt-4o-mini", "fingerprint fp_stub_1 -> fp_stub_2")
    ]
    assert main(["drift", "--store", recorded]) == 0
    assert "Changes over time" in capsys.readouterr().out


def test_rate_change_is_on_the_timeline(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import random

    url = f"sqlite:///{tmp_path / 'r.db'}"
    rng = random.Random(3)
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", seed=1)
    with SeedLockCallbackHandler(store=url) as handler:
        config: Any = {"callbacks": [handler]}
        stub.reply = lambda body: "stable " + str(body["messages"][-1]["content"])
        for _ in range(7):
            for i in range(10):
                model.invoke(f"q{i}", config=config)
        stub.reply = lambda body: f"noisy {rng.random()}"
        for _ in range(2):
            for i in range(10):
                model.invoke(f"q{i}", config=config)
    assert main(["drift", "--store", url, "--json"]) == 0
    (change,) = json.loads(capsys.readouterr().out)["changes"]
    assert change["event"] == "seedlock.reproducibility_changed"
    assert change["change"].startswith("reproducibility of openai:m under fingerprint fp_stub_1")


def test_drill_down_sizes_a_change_without_text(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variant sharing the usual answer's first 40 characters is located
    after them, and its similarity is between 0 and 1, with no text stored."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    shared = "The rover landed safely near the crater "
    with SeedLockCallbackHandler(store=url) as handler:
        model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", seed=1)
        stub.reply = shared + "and sent its first panorama home to the team."
        model.invoke("q", config={"callbacks": [handler]})
        model.invoke("q", config={"callbacks": [handler]})
        stub.reply = shared + "but lost contact after a dust storm hit the site."
        model.invoke("q", config={"callbacks": [handler]})
    assert main(["drift", "--store", url, "--json"]) == 0
    (request,) = json.loads(capsys.readouterr().out)["requests"]
    assert main(["drift", "--store", url, "--json", "--request", request["request_hash"]]) == 0
    report = json.loads(capsys.readouterr().out)
    (other,) = [v for v in report["variants"] if v["output_hash"] != report["usual_output_hash"]]
    lo, hi = (int(x) for x in other["divergence_at"].strip("[)").split(", "))
    assert lo <= len(shared) < hi
    assert lo >= 32
    assert 0.0 < other["similarity_estimate"] < 1.0
    assert other["text"] is None
