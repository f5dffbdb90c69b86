"""Baseline files of the pytest plugin: one JSON Lines file per test module.

Layout (documented in docs/pytest.md), one JSON object per line, keys sorted:

- line 1, the header: ``{"seedlock_baseline": 1}``;
- then one line per (test, request hash, backend identity), sorted by those
  three: ``{"backend": ..., "fingerprint": ..., "model": ..., "outputs": [...],
  "request": ..., "test": ...}``, where ``outputs`` lists the distinct output
  hashes seen with their counts (most frequent first, then by hash) and, unless
  recorded with ``--seedlock-no-text``, the output text and tool calls replay
  answers with.

No timestamps, no machine names, no dict-order dependence: the same
observations write the same bytes anywhere, so ``git diff`` shows which test's
output changed. Reading is strict (unknown keys, wrong types, duplicates are
errors naming the file and line): a hand-edited file never passes silently.
Pure data and file I/O; the decision itself is `_decide.classify`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_seedlock._decide import History, Variant
from langchain_seedlock._errors import SeedLockError

FORMAT_VERSION = 1
HEADER_KEY = "seedlock_baseline"
SUFFIX = ".jsonl"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"backend", "fingerprint", "model", "outputs", "request", "test"})
_OUTPUT_KEYS = frozenset({"count", "hash", "text", "tool_calls"})


class BaselineFileError(SeedLockError, ValueError):
    """A baseline file cannot be read: ``path`` and ``line`` (1-based) say where."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(slots=True)
class Output:
    """One distinct output of a request: its hash, how often, and (for replay) its content."""

    hash: str
    count: int
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "hash": self.hash}
        if self.text is not None:
            out["text"] = self.text
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


@dataclass(slots=True)
class Entry:
    """What one test's request produced under one backend identity."""

    test: str
    request: str
    backend: str
    """`CallRecord.backend_id`, stored as it is (opaque)."""
    fingerprint: str | None = None
    model: str | None = None
    outputs: dict[str, Output] = field(default_factory=dict)

    def ordered_outputs(self) -> list[Output]:
        return sorted(self.outputs.values(), key=lambda o: (-o.count, o.hash))

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "outputs": [o.to_json() for o in self.ordered_outputs()],
            "request": self.request,
            "test": self.test,
        }


Key = tuple[str, str]  # (test, request hash)


@dataclass(slots=True)
class ModuleBaseline:
    """The entries of one baseline file, by (test, request) then backend."""

    entries: dict[Key, dict[str, Entry]] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.entries.setdefault((entry.test, entry.request), {})[entry.backend] = entry

    def history(self, test: str, request: str) -> History:
        """Per backend, the known outputs as `classify` reads them. An output's
        rank in the file stands in for its age: the file holds no clock."""
        return {
            backend: {
                o.hash: Variant(o.count, float(rank)) for rank, o in enumerate(e.ordered_outputs())
            }
            for backend, e in self.entries.get((test, request), {}).items()
        }

    def best(self, test: str, request: str) -> tuple[Entry, Output] | None:
        """The most frequent output of a request over every backend (replay's answer)."""
        found: tuple[Entry, Output] | None = None
        for backend in sorted(self.entries.get((test, request), {})):
            entry = self.entries[(test, request)][backend]
            top = entry.ordered_outputs()[0]
            if found is None or top.count > found[1].count:
                found = (entry, top)
        return found

    def tests(self) -> set[str]:
        return {test for test, _ in self.entries}

    def dumps(self) -> str:
        lines = [json.dumps({HEADER_KEY: FORMAT_VERSION})]
        for key in sorted(self.entries):
            for backend in sorted(self.entries[key]):
                lines.append(
                    json.dumps(self.entries[key][backend].to_json(), sort_keys=True,
                               ensure_ascii=False)
                )  # fmt: skip
        return "\n".join(lines) + "\n"


def module_file(baseline_dir: Path, module_path: Path, rootdir: Path) -> Path:
    """Where a test module's baseline lives: its path relative to the baseline
    directory's parent (``tests/unit/test_x.py`` -> ``tests/__seedlock__/unit/test_x.jsonl``),
    or to the rootdir when the module is elsewhere."""
    module_path = module_path.resolve()
    for base in (baseline_dir.resolve().parent, rootdir.resolve()):
        if module_path.is_relative_to(base):
            return baseline_dir / module_path.relative_to(base).with_suffix(SUFFIX)
    return baseline_dir / (module_path.stem + SUFFIX)


def has_baselines(baseline_dir: Path) -> bool:
    return baseline_dir.is_dir() and any(baseline_dir.rglob("*" + SUFFIX))


def load_dir(baseline_dir: Path) -> dict[Path, ModuleBaseline]:
    """Every baseline file under ``baseline_dir`` (absolute paths), strictly checked."""
    if not baseline_dir.is_dir():
        return {}
    return {p.resolve(): load_file(p) for p in sorted(baseline_dir.rglob("*" + SUFFIX))}


def load_file(path: Path) -> ModuleBaseline:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BaselineFileError(path, 1, f"is not UTF-8 text ({exc.reason})") from None
    lines = text.splitlines()
    if not lines:
        raise BaselineFileError(path, 1, "is empty (expected the header line)")
    header = _parse_line(path, 1, lines[0])
    if set(header) != {HEADER_KEY}:
        raise BaselineFileError(
            path, 1, f'the first line must be {{"{HEADER_KEY}": {FORMAT_VERSION}}}'
        )
    if header[HEADER_KEY] != FORMAT_VERSION:
        raise BaselineFileError(
            path, 1,
            f"format version {header[HEADER_KEY]!r} is not supported by this version of "
            f"langchain-seedlock (it reads version {FORMAT_VERSION})",
        )  # fmt: skip
    baseline = ModuleBaseline()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise BaselineFileError(path, number, "blank line (one JSON object per line)")
        entry = _entry(path, number, _parse_line(path, number, line))
        if entry.backend in baseline.entries.get((entry.test, entry.request), {}):
            raise BaselineFileError(
                path, number,
                f"duplicate entry for test {entry.test!r}, request {entry.request}, "
                f"backend {entry.backend}",
            )  # fmt: skip
        baseline.add(entry)
    return baseline


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BaselineFileError(path, number, f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise BaselineFileError(path, number, "must be a JSON object")
    return data


def _entry(path: Path, number: int, data: Mapping[str, Any]) -> Entry:
    def fail(reason: str) -> BaselineFileError:
        return BaselineFileError(path, number, reason)

    unknown = set(data) - _ENTRY_KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; expected {sorted(_ENTRY_KEYS)}")
    for key in ("test", "backend"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(f"{key!r} must be a non-empty string")
    request = data.get("request")
    if not isinstance(request, str) or not _HEX64.fullmatch(request):
        raise fail(f"'request' must be a sha256 hash (64 lowercase hex digits), got {request!r}")
    for key in ("fingerprint", "model"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise fail(f"{key!r} must be a string or null")
    outputs = data.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise fail("'outputs' must be a non-empty list")
    entry = Entry(
        data["test"], request, data["backend"], data.get("fingerprint"), data.get("model")
    )
    for item in outputs:
        output = _output(fail, item)
        if output.hash in entry.outputs:
            raise fail(f"output {output.hash} is listed twice")
        entry.outputs[output.hash] = output
    return entry


def _output(fail: Any, item: Any) -> Output:
    if not isinstance(item, dict):
        raise fail("each output must be a JSON object")
    unknown = set(item) - _OUTPUT_KEYS
    if unknown:
        raise fail(f"unknown output key(s) {sorted(unknown)}; expected {sorted(_OUTPUT_KEYS)}")
    digest, count = item.get("hash"), item.get("count")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise fail(f"output 'hash' must be a sha256 hash, got {digest!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise fail(f"output 'count' must be an integer >= 1, got {count!r}")
    text, calls = item.get("text"), item.get("tool_calls")
    if text is not None and not isinstance(text, str):
        raise fail("output 'text' must be a string")
    if calls is not None and not (
        isinstance(calls, list)
        and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls)
    ):
        raise fail("output 'tool_calls' must be a list of {'name': ..., 'args': {...}}")
    return Output(digest, count, text, calls)


def write_file(path: Path, baseline: ModuleBaseline) -> None:
    """Write atomically; a baseline with no entries removes the file."""
    if not baseline.entries:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(baseline.dumps(), encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def merge_recorded(
    old: ModuleBaseline, observed: Iterable[Entry], tests_run: Iterable[str]
) -> ModuleBaseline:
    """The file after a record run: tests that did not run keep their entries;
    a test that ran gets what it produced this time, with the variants and
    counts already recorded for the same request and backend added (recording
    twice teaches the file a backend's known variance)."""
    ran = set(tests_run)
    merged = ModuleBaseline()
    for (test, _), backends in old.entries.items():
        if test not in ran:
            for entry in backends.values():
                merged.add(entry)
    for entry in observed:
        known = merged.entries.get((entry.test, entry.request), {}).get(entry.backend)
        if known is None:
            previous = old.entries.get((entry.test, entry.request), {}).get(entry.backend)
            known = Entry(entry.test, entry.request, entry.backend)
            if previous is not None:
                known.outputs = {
                    h: Output(o.hash, o.count, o.text, o.tool_calls)
                    for h, o in previous.outputs.items()
                }
            merged.add(known)
        known.fingerprint, known.model = entry.fingerprint, entry.model
        for output in entry.outputs.values():
            have = known.outputs.get(output.hash)
            if have is None:
                known.outputs[output.hash] = Output(
                    output.hash, output.count, output.text, output.tool_calls
                )
            else:
                have.count += output.count
                have.text = output.text if output.text is not None else have.text
                have.tool_calls = output.tool_calls or have.tool_calls
    return merged
