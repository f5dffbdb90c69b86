"""``seedlock report`` on the real PostgreSQL store: 100,000 calls, aggregates only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock import open_store
from langchain_seedlock._store._postgres import PostgresStore
from langchain_seedlock.cli import main
from tests._fixtures.report_data import fill
from tests.unit_tests.test_report import MB2, expected_buckets

pytestmark = pytest.mark.postgres


def test_100k_calls_report_matches_the_calls_and_stays_small(
    fresh_postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = open_store("memory://")
    with open_store(fresh_postgres_url) as pg:
        calls = fill(pg, 100_000)
        assert fill(memory, 100_000) == calls
        # The SQL aggregation gives exactly what the calls say (and what memory:// says).
        assert pg.rate_buckets(3600.0) == expected_buckets(calls, 3600.0)
        assert pg.rate_buckets(900.0, model_key="openai:smollm2") == memory.rate_buckets(
            900.0, model_key="openai:smollm2"
        )
        assert pg.drifting_requests(limit=25) == memory.drifting_requests(limit=25)
        assert pg.event_counts() == memory.event_counts()
        assert pg.recent_events(limit=50) == memory.recent_events(limit=50)
        assert pg.backends() == memory.backends()
        assert pg.in_flight() == memory.in_flight()
        assert sum(r.calls for r in pg.in_flight()) == 100_000
        groups = [b for b in pg.rate_buckets(3600.0) if b.repeat_calls]

    def per_row(*_: Any, **__: Any) -> Any:
        raise AssertionError("the report must not read per-request or all-event rows")

    for name in ("requests", "outputs_for", "events", "fingerprints_for"):
        monkeypatch.setattr(PostgresStore, name, per_row)
    out = tmp_path / "pg.html"
    assert (
        main(["report", "--html", str(out), "--store", fresh_postgres_url, "--bucket", "1h"]) == 0
    )
    page = out.read_text(encoding="utf-8")
    assert len(page.encode()) < MB2
    assert page.count('<circle class="pt"') == len(groups) > 90
    assert "100000 stored calls" in page
    assert "pg-Secr3t" not in page  # the store URL is shown redacted
