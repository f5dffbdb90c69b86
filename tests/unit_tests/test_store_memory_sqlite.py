"""The memory and SQLite stores through the public surface (`open_store`)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from langchain_seedlock._errors import StoreError, StoreVersionError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import (
    BaselineStore,
    StoredEvent,
    default_store_url,
    open_store,
)


def rec(
    request_hash: str = "r1",
    output_hash: str = "o1",
    fp: str | None = "fp_a",
    at: float | None = None,
    text: str | None = "hello",
    model: str = "gpt-4o-mini",
) -> CallRecord:
    return CallRecord(
        provider="openai",
        request_model=model,
        request_hash=request_hash,
        output_hash=output_hash,
        seed=7,
        system_fingerprint=fp,
        output_text=text,
        at=time.time() if at is None else at,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaselineStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/b.db"
    with open_store(url) as s:
        yield s


def test_counts_first_last_seen(store: BaselineStore) -> None:
    store.write([rec(at=10), rec(at=30), rec(at=20), rec(output_hash="o2", at=40)])
    store.write([rec(at=5)])
    outs = store.outputs_for("r1")
    assert [(o.output_hash, o.count, o.first_seen, o.last_seen) for o in outs] == [
        ("o1", 4, 5, 30),
        ("o2", 1, 40, 40),
    ]
    assert all(o.system_fingerprint == "fp_a" for o in outs)
    assert outs[0].output_text is None  # not stored without capture_content
    assert store.outputs_for("unknown") == []


def test_backend_identity_separates_outputs(store: BaselineStore) -> None:
    store.write([rec(fp="a", at=1), rec(fp="b", at=2), rec(fp=None, at=3)])
    outs = store.outputs_for("r1")
    assert [o.system_fingerprint for o in outs] == ["a", "b", None]
    assert len({o.backend_id for o in outs}) == 3
    fps = store.fingerprints_for("openai:gpt-4o-mini")
    assert [(f.system_fingerprint, f.count) for f in fps] == [("a", 1), ("b", 1), (None, 1)]


def test_fingerprints_most_recent_last(store: BaselineStore) -> None:
    store.write([rec(fp="old", at=1), rec(fp="new", at=5), rec(fp="old", at=3)])
    fps = store.fingerprints_for("openai:gpt-4o-mini")
    assert [(f.system_fingerprint, f.count, f.first_seen, f.last_seen) for f in fps] == [
        ("old", 2, 1, 3),
        ("new", 1, 5, 5),
    ]
    assert store.fingerprints_for("openai:other") == []


def test_capture_content_stores_text(store: BaselineStore) -> None:
    store.write([rec(text="first")], capture_content=True)
    store.write([rec(text="second")], capture_content=True)
    (out,) = store.outputs_for("r1")
    assert out.output_text == "first"
    assert out.count == 2


def test_requests_and_models(store: BaselineStore) -> None:
    store.write([
        rec("r1", "o1", at=1), rec("r1", "o2", fp="b", at=2),
        rec("r2", "o1", at=5, model="other"), rec("r2", "o1", at=6, model="other"),
    ])  # fmt: skip
    reqs = store.requests()
    assert [(r.request_hash, r.model_key, r.calls, r.distinct_outputs, r.distinct_backends)
            for r in reqs] == [("r2", "openai:other", 2, 1, 1),
                               ("r1", "openai:gpt-4o-mini", 2, 2, 2)]  # fmt: skip
    assert [r.request_hash for r in store.requests(model_key="openai:gpt-4o-mini")] == ["r1"]
    assert len(store.requests(limit=1)) == 1
    models = store.models()
    assert {(m.model_key, m.system_fingerprint) for m in models} == {
        ("openai:gpt-4o-mini", "fp_a"), ("openai:gpt-4o-mini", "b"), ("openai:other", "fp_a"),
    }  # fmt: skip


def test_events_roundtrip_and_filters(store: BaselineStore) -> None:
    store.write(
        [],
        [
            StoredEvent("seedlock.output_drift", 20, {"explained": False, "n": 1, "t": (1, 2)}),
            StoredEvent("seedlock.fingerprint_changed", 10, {"previous": "a"}),
            StoredEvent("seedlock.output_drift", 30, {"odd": object}),
        ],
    )
    evs = store.events()
    assert [(e.name, e.at) for e in evs] == [
        ("seedlock.fingerprint_changed", 10),
        ("seedlock.output_drift", 20),
        ("seedlock.output_drift", 30),
    ]
    assert evs[0].fields == {"previous": "a"}
    assert [e.at for e in store.events(name="seedlock.output_drift")] == [20, 30]
    assert [e.at for e in store.events(since=15)] == [20, 30]
    assert len(store.events(limit=2)) == 2


def test_prune_by_age(store: BaselineStore) -> None:
    store.write(
        [rec("old", at=1, fp="x"), rec("new", at=100, fp="y"), rec("m2", at=2, fp="z", model="m2")],
        [StoredEvent("e", 1), StoredEvent("e", 100)],
    )
    deleted = store.prune(older_than=50)
    # outputs old + m2, event at 1, fingerprint x (z is the newest of its model: kept)
    assert deleted == 4
    assert store.outputs_for("old") == []
    assert [o.count for o in store.outputs_for("new")] == [1]
    assert [e.at for e in store.events()] == [100]
    assert [f.system_fingerprint for f in store.fingerprints_for("openai:gpt-4o-mini")] == ["y"]
    assert [f.system_fingerprint for f in store.fingerprints_for("openai:m2")] == ["z"]


def test_prune_keep_last(store: BaselineStore) -> None:
    store.write([rec(f"r{i}", o, at=i) for i in range(10) for o in ("a", "b")])
    assert store.prune(keep_last=3) == 14
    assert [r.request_hash for r in store.requests()] == ["r9", "r8", "r7"]
    assert store.prune(keep_last=3) == 0


def test_unknown_scheme_names_it_and_lists_supported() -> None:
    with pytest.raises(StoreError, match=r"'redis'.*memory://.*sqlite:///.*postgresql://") as info:
        open_store("redis://user:hunter2pass@host/0")
    assert "hunter2pass" not in str(info.value)


def test_default_store_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEEDLOCK_STORE", raising=False)
    url = default_store_url()
    assert url.startswith("sqlite:///")
    assert url.endswith("langchain-seedlock/baselines.db")
    monkeypatch.setenv("SEEDLOCK_STORE", f"sqlite:///{tmp_path}/env.db")
    assert default_store_url() == f"sqlite:///{tmp_path}/env.db"
    with open_store() as s:
        s.write([rec()])
    assert (tmp_path / "env.db").exists()


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///sub/rel.db") as s:
        s.write([rec()])
    assert (tmp_path / "sub" / "rel.db").exists()
    with open_store(f"sqlite:///{tmp_path}/abs.db") as s:  # tmp_path starts with /
        assert s.url == f"sqlite:///{tmp_path}/abs.db"
    with pytest.raises(StoreError, match="no path"):
        open_store("sqlite:///")


def test_sqlite_persists_and_is_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    with open_store(url) as s:
        s.write([rec(), rec()])
    with open_store(url) as s:
        assert s.outputs_for("r1")[0].count == 2
    conn = sqlite3.connect(tmp_path / "p.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    conn.close()


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreVersionError, match=r"schema version 99.*upgrade"):
        open_store(f"sqlite:///{path}")


def test_sqlite_corrupt_file_is_an_error_not_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    junk = b"this is not a database, just some text\n" * 200
    path.write_bytes(junk)
    with pytest.raises(StoreError, match=str(path)):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == junk


def test_sqlite_deleted_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    with open_store(f"sqlite:///{path}") as s:
        s.write([rec()])
        for p in tmp_path.glob("gone.db*"):
            p.unlink()
        with pytest.raises(StoreError, match="deleted"):
            s.write([rec()])
        with pytest.raises(StoreError, match="deleted"):
            s.outputs_for("r1")


def test_sqlite_read_only_option_raises_on_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ro.db"
    open_store(url).close()
    with open_store(url, read_only=True) as s:
        assert s.outputs_for("r1") == []
        with pytest.raises(StoreError, match="read-only"):
            s.write([rec()])


def _make_read_only(path: Path) -> Callable[[], None]:
    """Make a file read-only even for root (which ignores file modes): chattr +i."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o444)
    return lambda: path.chmod(0o644)


def test_sqlite_read_only_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").close()
    restore = _make_read_only(path)
    try:
        s = open_store(f"sqlite:///{path}")
        with pytest.raises(StoreError, match=str(path)):
            s.write([rec()])
        s.close()
    finally:
        restore()


def test_sqlite_many_threads(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/t.db") as s:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: s.write([rec(output_hash=f"o{i % 4}")]), range(800)))
        assert sorted(o.count for o in s.outputs_for("r1")) == [200, 200, 200, 200]


async def test_sqlite_200_concurrent_awrite(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/a.db") as s:
        await asyncio.gather(*(s.awrite([rec(output_hash=f"o{i % 2}")]) for i in range(200)))
        outs = await s.aoutputs_for("r1")
        assert sorted(o.count for o in outs) == [100, 100]
        fps = await s.afingerprints_for("openai:gpt-4o-mini")
        assert [f.count for f in fps] == [200]


def _hammer(url: str, worker: int, n: int) -> int:
    store = open_store(url)
    try:
        for i in range(n):
            store.write(
                [rec(f"r{i % 5}", f"o{worker % 2}", fp=f"fp{i % 3}")],
                [StoredEvent("seedlock.call", float(i), {"worker": worker})]
                if i % 100 == 0
                else (),
            )
    finally:
        store.close()
    return worker


def run_processes(url: str, procs: int, n: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with ctx.Pool(procs) as pool:
        assert sorted(pool.starmap(_hammer, [(url, w, n) for w in range(procs)])) == list(
            range(procs)
        )
    return time.perf_counter() - start


def check_exact(store: BaselineStore, procs: int, n: int) -> None:
    total = procs * n
    assert sum(r.calls for r in store.requests()) == total
    for i in range(5):
        outs = store.outputs_for(f"r{i}")
        expected = sum(1 for j in range(n) if j % 5 == i) * procs
        assert sum(o.count for o in outs) == expected
    assert sum(f.count for f in store.fingerprints_for("openai:gpt-4o-mini")) == total
    assert len(store.events(limit=10_000)) == procs * len(range(0, n, 100))


def test_sqlite_8_processes_x_1000_writes_exact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mp.db"
    open_store(url).close()
    elapsed = run_processes(url, 8, 1000)
    print(f"sqlite: 8000 single-record writes from 8 processes in {elapsed:.2f}s")
    with open_store(url) as s:
        check_exact(s, 8, 1000)


def test_open_store_factory_is_callable_type() -> None:
    factory: Callable[..., BaselineStore] = open_store
    assert isinstance(factory("memory://"), BaselineStore)


def _random_calls(n: int, seed: int) -> list[CallRecord]:
    import random

    rng = random.Random(seed)
    calls = []
    for i in range(n):
        model = rng.choice(["m1", "m2"])  # a request hash covers the model: one per hash
        calls.append(
            rec(
                request_hash=f"{model}-r{rng.randrange(20)}",
                output_hash=f"o{rng.choices(range(3), (6, 3, 1))[0]}",
                fp=rng.choice(["fp_a", "fp_b"]),
                model=model,
                at=float(i),
            )
        )
    return calls


def expected_backends(calls: list[CallRecord]) -> dict[tuple[str, str | None], tuple[int, ...]]:
    """The definition, written out the slow way: per (model, fingerprint)."""
    outs: dict[tuple[str, str | None], dict[str, list[str]]] = {}
    for c in calls:
        per = outs.setdefault((c.model_key, c.system_fingerprint), {})
        per.setdefault(c.request_hash, []).append(c.output_hash)
    result = {}
    for key, per in outs.items():
        ns = [(len(v), len(set(v))) for v in per.values()]
        result[key] = (
            len(per),
            sum(n for n, _ in ns),
            sum(n - 1 for n, _ in ns),
            sum(n - k for n, k in ns),
            sum(n >= 2 for n, _ in ns),
            sum(n >= 2 and k == 1 for n, k in ns),
        )
    return result


def summarized(store: BaselineStore) -> dict[tuple[str, str | None], tuple[int, ...]]:
    return {
        (b.model_key, b.system_fingerprint): (
            b.requests,
            b.calls,
            b.repeat_calls,
            b.known_repeats,
            b.tarr_requests,
            b.tarr_identical,
        )
        for b in store.backends()
    }


def test_backends_match_the_definition(store: BaselineStore) -> None:
    calls = _random_calls(600, seed=3)
    store.write(calls)
    assert summarized(store) == expected_backends(calls)
    (one,) = [b for b in store.backends(model_key="openai:m1") if b.system_fingerprint == "fp_a"]
    assert one.reproducibility_rate == one.known_repeats / one.repeat_calls
    assert all(b.model_key == "openai:m1" for b in store.backends(model_key="openai:m1"))
