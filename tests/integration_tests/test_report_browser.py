"""``seedlock report --html`` in a real headless browser (Debian's chromium, Playwright).

Skipped only when the ``playwright`` package is missing (the ``test`` extra
installs it); a missing chromium is an error: ``bash scripts/setup.sh``
installs it (apt), and CI runs that.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock import open_store
from langchain_seedlock.cli import main
from tests._fixtures.report_data import fill

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser


def chromium_path() -> str:
    found = os.environ.get("SEEDLOCK_CHROMIUM") or shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium not found: install Debian's package (apt-get install chromium, "
            "done by scripts/setup.sh) or set SEEDLOCK_CHROMIUM to a Chromium binary"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


def test_report_opens_offline_with_chart_and_filters(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_store(url) as store:
        fill(store, 3000)
        groups = [b for b in store.rate_buckets(3600.0) if b.repeat_calls]
        recent = store.recent_events(limit=500)
    out = tmp_path / "report.html"
    assert main(["report", "--html", str(out), "--store", url, "--bucket", "1h"]) == 0

    page = browser.new_page(viewport={"width": 1150, "height": 900})
    problems: list[str] = []
    fetched: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(out.as_uri())
    assert problems == []
    assert fetched == [out.as_uri()]  # nothing else loaded: the page is self-contained

    # The chart has one point per (model, backend, hour) group with repeat calls.
    assert page.locator("svg[data-chart=rate] circle.pt").count() == len(groups) > 20
    assert page.locator("svg[data-chart=rate]").count() == 2  # one per model
    assert page.locator("#verdict").inner_text().startswith("Not reproducible")

    rows = page.locator("#events tbody tr:not([hidden])")
    assert rows.count() == len(recent)
    assert page.locator("#f-shown").inner_text() == f"{len(recent)} of {len(recent)} events shown"

    page.select_option("#f-name", "seedlock.fingerprint_changed")
    changes = [e for e in recent if e.name == "seedlock.fingerprint_changed"]
    assert rows.count() == len(changes) == 2
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {
        "seedlock.fingerprint_changed"
    }

    page.select_option("#f-name", "")
    page.select_option("#f-model", "openai:smollm2")
    smol = [e for e in recent if "smollm2" in str(e.fields.get("gen_ai.request.model", ""))
            or e.fields.get("seedlock.model_key") == "openai:smollm2"]  # fmt: skip
    assert rows.count() == len(smol) > 0

    page.select_option("#f-model", "")
    wanted = next(e for e in recent if e.name == "seedlock.output_drift")
    full_hash = wanted.fields["seedlock.request_hash"]
    page.fill("#f-text", full_hash)  # the full hash, though the cell shows 16 characters
    same = [e for e in recent if e.fields.get("seedlock.request_hash") == full_hash]
    assert rows.count() == len(same) >= 1
    page.fill("#f-text", "")
    assert rows.count() == len(recent)
    assert problems == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_probe_preset_page_opens_offline_with_its_charts(browser: Any, tmp_path: Path) -> None:
    """The probe's --html page is built from the same helpers: it loads with no
    console error and nothing fetched, its charts are drawn, answers visible."""
    import random

    from langchain_seedlock.probe import run_cookbook
    from langchain_seedlock.testing import FakeBackend

    with FakeBackend() as stub:
        stub.reply = lambda body: "seeded answer" if body.get("seed") else f"x {random.random()}"
        result = run_cookbook(model="m", base_url=stub.base_url, runs=3, store="memory://")
    out = tmp_path / "probe.html"
    out.write_text(result.to_html(), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1150, "height": 900})
    problems: list[str] = []
    fetched: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(out.as_uri())
    assert problems == []
    assert fetched == [out.as_uri()]
    charts = page.locator("svg.chart")
    assert charts.count() == len(result.charts) >= 1
    assert charts.first.bounding_box()["width"] > 100  # drawn, not collapsed
    assert page.locator("p.verdict").inner_text() == result.verdict
    assert page.get_by_text("seeded answer").first.is_visible()  # full answers, not tooltips
    page.close()
