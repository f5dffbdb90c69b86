"""Docs and examples use the public API only: no snippet of docs/*.md or
README.md and no examples/*.py imports a private module or name
(``langchain_seedlock._middleware``, ``from langchain_seedlock import _events``).
Scripts in scripts/ may; they are tools for this repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [*ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("examples/*.py")],
)

# A private module anywhere in a dotted path (langchain_seedlock._probe,
# langchain_seedlock.cli._drift_cmd), or a private name imported from ours.
_PRIVATE_PATH = re.compile(r"\blangchain_seedlock(?:\.\w+)*\._\w*")
_PRIVATE_NAME = re.compile(
    r"^\s*from\s+langchain_seedlock(?:\.\w+)*\s+import\s+\(?([^)\n]*(?:\)|\n(?:\s+[^)\n]*\n)*\s*\)|$))",
    re.MULTILINE,
)


def private_imports(text: str) -> list[str]:
    """The private references in ``text`` (empty when it uses public names only)."""
    found = [m.group(0) for m in _PRIVATE_PATH.finditer(text)]
    for m in _PRIVATE_NAME.finditer(text):
        names = re.findall(r"\b(\w+)(?:\s+as\s+\w+)?", m.group(1))
        found += [f"import {n}" for n in names if n.startswith("_") and n != "__version__"]
    return found


def test_the_scan_finds_private_imports() -> None:
    assert private_imports("from langchain_seedlock._probe import run_probe") == [
        "langchain_seedlock._probe"
    ]
    assert private_imports("import langchain_seedlock._local_server as ls") != []
    assert private_imports("from langchain_seedlock import _events as ev") == ["import _events"]
    assert private_imports("from langchain_seedlock import (\n    SeedLock,\n    _fork,\n)") == [
        "import _fork"
    ]
    assert private_imports("x = langchain_seedlock._middleware.SeedLockMiddleware") != []
    assert private_imports("from langchain_seedlock import SeedLock, __version__") == []
    assert private_imports("from langchain_seedlock.testing import FakeBackend") == []


def test_there_are_files_to_scan() -> None:
    names = {p.name for p in FILES}
    assert {"README.md", "agents.md", "probe.md", "agent.py", "chain.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_and_examples_import_public_names_only(path: Path) -> None:
    assert private_imports(path.read_text(encoding="utf-8")) == []
