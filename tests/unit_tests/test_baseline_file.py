"""The pytest plugin's baseline files: stable bytes, strict reading, record merging."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_seedlock._baseline_file import (
    BaselineFileError,
    Entry,
    ModuleBaseline,
    Output,
    load_file,
    merge_recorded,
    module_file,
    write_file,
)
from langchain_seedlock._decide import Verdict, classify

H = [c * 64 for c in "0123456789abcdef"]
LINE = (
    f'{{"test": "t", "request": "{H[0]}", "backend": "b", "outputs": '
    f'[{{"hash": "{H[1]}", "count": 1}}]}}\n'
)


def entry(test: str, request: str, backend: str, *outputs: tuple[str, int]) -> Entry:
    e = Entry(test, request, backend, "fp_1", "m")
    for digest, count in outputs:
        e.outputs[digest] = Output(digest, count, f"text {digest[:4]}")
    return e


@given(
    st.dictionaries(
        st.tuples(
            st.sampled_from(["t1", "t2", "t[é]"]),
            st.sampled_from(H[:3]),
            st.sampled_from(["b1", "b2"]),
            st.sampled_from(H[3:6]),
        ),
        st.integers(1, 5),
        max_size=12,
    )
)
def test_same_entries_in_any_order_write_the_same_bytes(
    rows: dict[tuple[str, str, str, str], int],
) -> None:
    dumped = []
    for ordered in (list(rows.items()), list(reversed(rows.items()))):
        baseline = ModuleBaseline()
        for (test, request, backend, digest), count in ordered:
            e = baseline.entries.get((test, request), {}).get(backend)
            if e is None:
                e = entry(test, request, backend)
                baseline.add(e)
            e.outputs[digest] = Output(digest, count, f"text {digest[:4]}")
        dumped.append(baseline.dumps())
    assert dumped[0] == dumped[1]
    assert dumped[0].count("\n") == 1 + len({(t, r, b) for t, r, b, _ in rows})


def test_round_trip_and_history(tmp_path: Path) -> None:
    baseline = ModuleBaseline()
    baseline.add(entry("t", H[0], "b1", (H[1], 3), (H[2], 1)))
    path = tmp_path / "x.jsonl"
    write_file(path, baseline)
    loaded = load_file(path)
    assert loaded.dumps() == baseline.dumps() == path.read_text()
    history = loaded.history("t", H[0])
    assert classify(H[1], "b1", history).verdict is Verdict.REPRODUCED
    assert classify(H[2], "b1", history).verdict is Verdict.KNOWN_VARIANT
    assert classify(H[3], "b1", history).verdict is Verdict.NEW_VARIANT
    assert classify(H[3], "b2", history).verdict is Verdict.EXPLAINED
    best = loaded.best("t", H[0])
    assert best is not None
    assert best[1].hash == H[1]


def test_record_merge_keeps_other_tests_and_adds_counts() -> None:
    old = ModuleBaseline()
    old.add(entry("kept", H[0], "b1", (H[1], 1)))
    old.add(entry("ran", H[0], "b1", (H[1], 2)))
    old.add(entry("ran", H[2], "b1", (H[3], 1)))  # no longer requested
    old.add(entry("ran", H[0], "b0", (H[4], 1)))  # an older backend
    merged = merge_recorded(old, [entry("ran", H[0], "b1", (H[1], 1), (H[5], 1))], ["ran"])
    assert set(merged.entries) == {("kept", H[0]), ("ran", H[0])}
    ran = merged.entries[("ran", H[0])]
    assert set(ran) == {"b1"}
    assert {h: o.count for h, o in ran["b1"].outputs.items()} == {H[1]: 3, H[5]: 1}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "is empty"),
        ('{"other": 1}\n', 1, "the first line must be"),
        ('{"seedlock_baseline": 1}\n\n', 2, "blank line"),
        ('{"seedlock_baseline": 1}\n[1]\n', 2, "must be a JSON object"),
        ('{"seedlock_baseline": 1}\n' + LINE * 2, 3, "duplicate entry"),
        (
            '{"seedlock_baseline": 1}\n'
            f'{{"test": "t", "request": "{H[0]}", "backend": "b", "outputs": '
            f'[{{"hash": "{H[1]}", "count": true}}]}}\n',
            2,
            "'count' must be an integer",
        ),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(BaselineFileError) as info:
        load_file(path)
    assert info.value.line == line
    assert reason in str(info.value)
    assert str(path) in str(info.value)


def test_module_file_mirrors_the_tests_directory(tmp_path: Path) -> None:
    base = tmp_path / "tests" / "__seedlock__"
    module = tmp_path / "tests" / "unit" / "test_chain.py"
    assert module_file(base, module, tmp_path) == base / "unit" / "test_chain.jsonl"
    elsewhere = tmp_path / "src" / "test_inline.py"
    assert module_file(base, elsewhere, tmp_path) == base / "src" / "test_inline.jsonl"
