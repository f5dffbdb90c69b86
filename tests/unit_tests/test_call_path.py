"""A call's way from a door to the store: four files, each handing it on.

door (`_callbacks.py` / `_middleware.py`) -> `_drift.py` (`DriftMonitor`) ->
`_store/_writer.py` -> the store's ``write`` (`_store/_sql.py` for SQLite and
PostgreSQL, whose dialect files only run its transaction). The stack seen by the
store's ``write`` is that way; the helpers a step uses (record builder,
decision, event builders) have returned by then and never call back up
(the import check below).
"""

from __future__ import annotations

import ast
import inspect
import traceback
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock import (
    DriftMonitor,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockMiddleware,
    open_store,
)
from langchain_seedlock.testing import FakeBackend

PACKAGE = Path(__file__).parents[2] / "src" / "langchain_seedlock"
DOORS = {"_callbacks", "_middleware", "_door", "_chat_models", "_locked_base", "_locked_openai",
         "_locked_model"}  # fmt: skip
MONITOR = {"_drift", "_drift_store"}
WRITER = {"_store._writer"}
STORES = {"_store._sql", "_store._sqlite", "_store._postgres", "_store._memory", "_store._base",
          "_store._schema"}  # fmt: skip
# The pure helpers the steps use: they return a value and import no step.
HELPERS = {"_observe", "_decide", "_drift_events", "_baselines", "_record", "_hashing", "_events"}


def _stack_at_write(store: Any) -> list[list[str]]:
    """Patch ``store.write`` to keep the package files on the stack, outermost first."""
    stacks: list[list[str]] = []
    write = store.write
    # The file whose `write` the store runs (the SQL stores share theirs:
    # `_store/_sql.py`; the dialect only opens the transaction).
    own = Path(inspect.getfile(type(store).write)).relative_to(PACKAGE).as_posix()

    def spy(*args: Any, **kwargs: Any) -> Any:
        files: list[str] = []
        for frame in traceback.extract_stack()[:-1]:
            path = Path(frame.filename)
            if PACKAGE not in path.parents:
                continue
            name = path.relative_to(PACKAGE).as_posix()
            if not files or files[-1] != name:
                files.append(name)
        stacks.append([*files, own])
        return write(*args, **kwargs)

    store.write = spy
    return stacks


@pytest.fixture
def backend() -> Any:
    with FakeBackend() as fake:
        yield fake


def _model(backend: FakeBackend) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="m", api_key="sk-test", base_url=backend.base_url, seed=5,
                      temperature=0.0, max_retries=0)  # fmt: skip


def test_the_callback_handler_reaches_the_store_in_four_files(
    backend: FakeBackend, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    stacks = _stack_at_write(store)
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=0))
    _model(backend).invoke("hi", config={"callbacks": [handler]})
    assert stacks == [["_callbacks.py", "_drift.py", "_store/_writer.py", "_store/_sql.py"]]
    assert store.requests()[0].calls == 1
    store.close()


def test_the_agent_middleware_reaches_the_store_in_four_files(
    backend: FakeBackend, tmp_path: Path
) -> None:
    from langchain.agents import create_agent

    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    stacks = _stack_at_write(store)
    middleware = SeedLockMiddleware(SeedLock(seed=5), monitor=DriftMonitor(store, buffer_size=0))
    create_agent(_model(backend), [], middleware=[middleware]).invoke(
        {"messages": [{"role": "user", "content": "hi"}]}
    )
    assert stacks == [["_middleware.py", "_drift.py", "_store/_writer.py", "_store/_sql.py"]]
    store.close()


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports (names relative to the package)."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("langchain_seedlock."):
                found.add(name.removeprefix("langchain_seedlock."))
    return found


@pytest.mark.parametrize(
    ("layer", "below_forbidden"),
    [
        (MONITOR, DOORS),
        (WRITER, DOORS | MONITOR),
        (STORES, DOORS | MONITOR | WRITER),
        (HELPERS, DOORS | MONITOR | WRITER | STORES - {"_store._base"}),
    ],
    ids=["monitor", "writer", "stores", "helpers"],
)
def test_no_step_calls_back_up(layer: set[str], below_forbidden: set[str]) -> None:
    for module in sorted(layer):
        up = {
            m
            for m in _imports(module)
            if m in below_forbidden or m.rsplit(".", 1)[0] in below_forbidden
        }
        assert not up, f"{module} imports {sorted(up)}, a step before it on a call's way"


@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_door_only_translates(door: str) -> None:
    """A door is LangChain's shapes in, the core's record out: 250 lines at most."""
    lines = (PACKAGE / f"{door}.py").read_text().count("\n")
    assert lines <= 250, f"{door}.py has {lines} lines; move logic into the core (_observe.py)"
