"""``seedlock report --html``: the store's report queries and the page."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import open_store
from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store._base import BaselineStore, RateBucket, StoredEvent
from langchain_seedlock._store._sqlite import SQLiteStore
from langchain_seedlock.cli import main
from tests._fixtures.report_data import Call, fill
from tests._fixtures.stub_openai import StubOpenAI

MB2 = 2 * 1024 * 1024


def expected_buckets(calls: list[Call], width: float) -> list[RateBucket]:
    """What `rate_buckets` must answer, computed from the calls themselves."""
    per_request: dict[tuple[str, str, str], list[Call]] = defaultdict(list)
    for c in calls:
        per_request[(c.model_key, c.backend_id, c.request_hash)].append(c)
    cells: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * 5)
    for (model, backend, _), group in per_request.items():
        n, k = len(group), len({c.output_hash for c in group})
        cell = cells[(model, backend, int(group[0].at // width))]
        for i, v in enumerate((1, n, n - 1, n - k, 0)):
            cell[i] += v
        firsts: dict[str, float] = {}
        for c in group:
            firsts.setdefault(c.output_hash, c.at)
        for at in firsts.values():
            cells[(model, backend, int(at // width))][4] += 1
    return [RateBucket(m, b, i * width, *v) for (m, b, i), v in sorted(cells.items())]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Call], list[BaselineStore]]:
    """The same 5,000 calls in a memory store and a SQLite store."""
    path = tmp_path_factory.mktemp("report") / "r.db"
    stores: list[BaselineStore] = [open_store("memory://"), open_store(f"sqlite:///{path}")]
    calls = fill(stores[0], 5000)
    assert fill(stores[1], 5000) == calls
    yield calls, stores
    for s in stores:
        s.close()


@pytest.mark.parametrize("width", [600.0, 3600.0, 86400.0])
def test_rate_buckets_match_the_calls(
    filled: tuple[list[Call], list[BaselineStore]], width: float
) -> None:
    calls, stores = filled
    want = expected_buckets(calls, width)
    assert any(b.new_variants for b in want)
    assert any(b.repeat_calls for b in want)
    for store in stores:
        assert store.rate_buckets(width) == want, store
        one = store.rate_buckets(width, model_key="openai:smollm2")
        assert one == [b for b in want if b.model_key == "openai:smollm2"]


def test_report_queries_agree_across_stores(
    filled: tuple[list[Call], list[BaselineStore]],
) -> None:
    calls, (memory, sqlite) = filled
    drifting = memory.drifting_requests(limit=10)
    assert drifting == sqlite.drifting_requests(limit=10)
    assert len(drifting) == 10
    per_request: dict[str, set[str]] = defaultdict(set)
    for c in calls:
        per_request[c.request_hash].add(c.output_hash)
    most = max(len(v) for v in per_request.values())
    assert drifting[0].distinct_outputs == most > 1
    assert all(r.drift_events >= 1 and r.first_difference_char is not None for r in drifting)
    assert memory.drifting_requests(model_key="openai:gpt-4o-mini", limit=5) == (
        sqlite.drifting_requests(model_key="openai:gpt-4o-mini", limit=5)
    )
    assert memory.event_counts() == sqlite.event_counts()
    assert [c.name for c in sqlite.event_counts()] == [
        "seedlock.output_drift",
        "seedlock.fingerprint_changed",
    ]
    assert memory.recent_events(limit=7) == sqlite.recent_events(limit=7)
    recent = sqlite.recent_events(limit=7)
    assert [e.at for e in recent] == sorted((e.at for e in recent), reverse=True)
    assert memory.in_flight() == sqlite.in_flight()
    by_bucket = {(r.model_key, r.bucket): r.calls for r in sqlite.in_flight()}
    assert sum(by_bucket.values()) == len(calls)
    assert {b for _, b in by_bucket} == {"1", "2-4", "5-16", ">16"}


def test_divergence_position_is_the_earliest() -> None:
    store = open_store("memory://")
    rh = "a" * 64
    store.write(
        [CallRecord("openai", "m", rh, o, 1, "fp", at=100.0 + i) for i, o in enumerate("xyz")],
        [
            StoredEvent("seedlock.output_drift", 101.0, {"seedlock.request_hash": rh,
                        "seedlock.explained": False, "seedlock.divergence_at": "[128, 256)"}),
            StoredEvent("seedlock.output_drift", 102.0, {"seedlock.request_hash": rh,
                        "seedlock.explained": True, "seedlock.divergence_at": "[64, 128)"}),
        ],
    )  # fmt: skip
    (r,) = store.drifting_requests()
    assert (r.drift_events, r.unexplained_events, r.divergence_at) == (2, 1, "[64, 128)")
    assert r.first_difference_char is None


def report(store_url: str, out: Path, *args: str) -> tuple[int, str]:
    code = main(["report", "--html", str(out), "--store", store_url, *args])
    return code, out.read_text(encoding="utf-8") if out.exists() else ""


def test_page_from_100k_calls_on_sqlite_reads_aggregates_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with open_store(url) as store:
        fill(store, 100_000)
        groups = [b for b in store.rate_buckets(3600.0) if b.repeat_calls]

    def per_row(*_: Any, **__: Any) -> Any:
        raise AssertionError("the report must not read per-request or all-event rows")

    for name in ("requests", "outputs_for", "events", "fingerprints_for"):
        monkeypatch.setattr(SQLiteStore, name, per_row)
    code, page = report(url, tmp_path / "r.html", "--bucket", "1h")
    assert code == 0
    assert len(page.encode()) < MB2
    # One point per (model, backend, hour) with repeat calls: 2 models x 2 backends x ~24 h.
    assert page.count('<circle class="pt"') == len(groups) > 90
    assert "Not reproducible" in page
    assert "100000 stored calls" in page


def test_page_is_self_contained_and_keeps_the_lessons(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_store(url) as store:
        fill(store, 3000)
    code, page = report(url, tmp_path / "r.html")
    assert code == 0
    # Nothing fetched from anywhere: no URL but the SVG namespace, and a CSP that forbids it.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=", page)
    assert " title=" not in page  # answers are in visible tables, not tooltips
    assert '<meta name="generated" content="20' in page
    assert "generated</dt><dd>20" in page
    assert "(higher is better)" in page
    assert "(lower is better)" in page
    assert 'id="verdict"' in page
    assert "Server settings" in page  # what the backend identity does and does not cover
    assert 'id="inflight"' in page
    assert "Not recorded in this store" not in page  # the calls carry in-flight counts


def test_page_from_handler_records_escapes_and_verdicts(stub: StubOpenAI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    handler = SeedLockCallbackHandler(store=url)
    model = ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=1)
    config: Any = {"callbacks": [handler]}
    for _ in range(3):
        model.invoke("stable <b>", config=config)
    handler.close()
    assert handler.monitor.store is not None
    handler.monitor.store.close()
    code, page = report(url, tmp_path / "ok.html")
    assert code == 0
    assert "<strong>Reproducible</strong>" in page

    handler = SeedLockCallbackHandler(store=url)
    config = {"callbacks": [handler]}
    model.invoke("stable <b>", config=config)  # this process now knows the usual text
    stub.reply = "Once upon a time <script>alert(1)</script> a robot painted."
    model.invoke("stable <b>", config=config)
    handler.close()
    assert handler.monitor.store is not None
    handler.monitor.store.close()
    code, page = report(url, tmp_path / "drift.html")
    assert code == 0
    assert "<strong>Not reproducible</strong>" in page
    assert "<script>alert" not in page
    backends = page.split('id="backends"')[1].split("</table>")[0]
    assert "no recent event" not in backends  # the resolved model, from the drift event
    assert 'id="drifting"' in page
    assert re.search(r"<td>char \d+", page)  # the divergence position


def test_empty_store_says_not_enough_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    open_store(url).close()
    code, page = report(url, tmp_path / "e.html")
    assert code == 0
    assert "Not enough data" in page
    assert "holds no calls" in page


def test_memory_store_page(tmp_path: Path) -> None:
    # memory:// holds nothing across processes: the page is the empty one, not an error.
    code, page = report("memory://", tmp_path / "m.html")
    assert code == 0
    assert "Not enough data" in page


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert report(missing, tmp_path / "x.html")[0] == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    assert not (tmp_path / "x.html").exists()
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_store(url) as store:
        fill(store, 200)
    assert report(url, tmp_path / "x.html", "--model", "gpt-5")[0] == 1
    err = capsys.readouterr().err
    assert "no model 'gpt-5'" in err
    assert "openai:smollm2" in err
    assert report(url, tmp_path / "no-dir" / "x.html")[0] == 1
    assert "cannot write" in capsys.readouterr().err
    for bad in ("0", "1x", "-5m"):
        with pytest.raises(SystemExit) as exc:
            main(["report", "--html", "x.html", "--bucket", bad])
        assert exc.value.code == 2
    assert "invalid duration" in capsys.readouterr().err


def test_model_filter_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_store(url) as store:
        fill(store, 400)
    assert main(["report", "--html", "-", "--store", url, "--model", "smollm2"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>")
    assert 'data-model="openai:smollm2"' in page
    assert 'data-model="openai:gpt-4o-mini"' not in page


def test_html_helpers_escape_and_scale() -> None:
    from langchain_seedlock._report import _html as h

    chart = h.rate_chart(
        [h.Series("<b>", [h.Point(10.0, 1.0, 0.5, 1.0, "<i>"), h.Point(20.0, 0.0)])],
        x0=0.0, x1=30.0, label='a "b"',
    )  # fmt: skip
    assert "<i>" not in chart
    assert "&lt;i&gt;" in chart
    assert 'aria-label="a &quot;b&quot;"' in chart
    assert chart.count('class="pt"') == 2
    ticks = h.time_ticks(3600.0, 7 * 3600.0)
    assert [t for t, _ in ticks] == [3600.0 * i for i in range(1, 8)]
    assert ticks[0][1] == "01:00"
    assert h.table(["a"], [[h.Raw("<code>x</code>")], ["<y>"]]).count("&lt;y&gt;") == 1


def test_written_page_has_the_usual_permissions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_store(url).close()
    out = tmp_path / "r.html"
    out.write_text("old")
    old_umask = os.umask(0o022)
    try:
        assert report(url, out)[0] == 0
    finally:
        os.umask(old_umask)
    assert out.stat().st_mode & 0o777 == 0o644  # readable by a web server, like any file
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
