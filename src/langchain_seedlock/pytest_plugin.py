"""The pytest plugin: LLM pipelines as regression tests that fail only on real change.

Registered by the ``pytest11`` entry point of langchain-seedlock (nothing to
install or enable). This module only declares options, the marker and the
fixture; the work is in `langchain_seedlock._pytest_session`, imported when a
mode other than ``off`` is active (it patches langchain-openai's model classes
for the session). Loading this module still imports the ``langchain_seedlock``
package (its parent), as any entry point inside the package would. See docs/pytest.md.

Options (also ini keys): ``--seedlock=record|verify|replay|off`` (``seedlock_mode``;
default ``off``, or ``verify`` when a baseline file exists), ``--seedlock-strict``
(``seedlock_strict``), ``--seedlock-no-text`` (``seedlock_no_text``),
``--seedlock-report=PATH``, ``--seedlock-dir=DIR`` (``seedlock_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from langchain_seedlock._pytest_session import SeedlockSession, SeedlockTest

MODES = ("record", "verify", "replay", "off")
DEFAULT_DIR = "tests/__seedlock__"
DEFAULT_SEED = 1234
ON_NEW = ("fail", "warn")
MARKER_HELP = (
    "seedlock(seed=1234, temperature=..., max_tokens=..., on_new='fail'|'warn'): lock the "
    "chat models of this test to a seed and sampling parameters, and compare their outputs "
    "with the baseline file (langchain-seedlock)"
)


@dataclass(frozen=True, slots=True)
class Settings:
    mode: str
    baseline_dir: Path
    strict: bool
    no_text: bool
    report: Path | None
    rootdir: Path


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seedlock", "langchain-seedlock: reproducible LLM calls")
    group.addoption(
        "--seedlock", dest="seedlock_mode", default=None, choices=MODES,
        help="record: write the baseline files from the real backend; verify: fail a test "
        "whose locked call gives a new output under the same backend; replay: answer "
        "locked calls from the baseline files, no network; off: do nothing. Default: "
        "ini seedlock_mode, else verify when a baseline file exists, else off.",
    )  # fmt: skip
    group.addoption(
        "--seedlock-strict", dest="seedlock_strict", action="store_true", default=None,
        help="fail (instead of skip) a test whose outputs changed with the backend identity.",
    )  # fmt: skip
    group.addoption(
        "--seedlock-no-text", dest="seedlock_no_text", action="store_true", default=None,
        help="record hashes only, no output text (replay then cannot answer).",
    )  # fmt: skip
    group.addoption(
        "--seedlock-report", dest="seedlock_report", metavar="PATH", default=None,
        help="write the seedlock summary as JSON to PATH (for CI systems).",
    )  # fmt: skip
    group.addoption(
        "--seedlock-dir", dest="seedlock_dir", metavar="DIR", default=None,
        help=f"directory of the baseline files (default: ini seedlock_dir, else {DEFAULT_DIR}).",
    )  # fmt: skip
    parser.addini("seedlock_mode", "default --seedlock mode (record|verify|replay|off)")
    parser.addini("seedlock_dir", f"directory of the baseline files (default {DEFAULT_DIR})")
    parser.addini("seedlock_strict", "as --seedlock-strict", type="bool", default=False)
    parser.addini("seedlock_no_text", "as --seedlock-no-text", type="bool", default=False)


def settings_from(config: pytest.Config) -> Settings:
    """The plugin's settings: command line over ini over defaults."""
    rootdir = Path(config.rootpath)
    raw_dir = config.getoption("seedlock_dir") or config.getini("seedlock_dir") or DEFAULT_DIR
    baseline_dir = Path(raw_dir)
    if not baseline_dir.is_absolute():
        # A command-line path is the user's (relative to where pytest runs); an
        # ini path is the project's (relative to the rootdir).
        base = Path.cwd() if config.getoption("seedlock_dir") else rootdir
        baseline_dir = base / baseline_dir
    mode = config.getoption("seedlock_mode") or str(config.getini("seedlock_mode")).strip()
    if mode and mode not in MODES:
        raise pytest.UsageError(
            f"seedlock_mode = {mode!r} in {config.inipath or 'the ini file'} is not a "
            f"seedlock mode; use one of {', '.join(MODES)}"
        )
    if not mode:
        from langchain_seedlock._baseline_file import has_baselines

        mode = "verify" if has_baselines(baseline_dir) else "off"
    strict = config.getoption("seedlock_strict") or bool(config.getini("seedlock_strict"))
    no_text = config.getoption("seedlock_no_text") or bool(config.getini("seedlock_no_text"))
    report = config.getoption("seedlock_report")
    return Settings(mode, baseline_dir, strict, no_text, Path(report) if report else None, rootdir)


_SESSION: pytest.StashKey[SeedlockSession | None] = pytest.StashKey()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = settings_from(config)
    session = None
    if settings.mode != "off":
        from langchain_seedlock._pytest_session import SeedlockSession

        session = SeedlockSession(config, settings)
        config.pluginmanager.register(session, "seedlock-session")
    config.stash[_SESSION] = session


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()
        config.pluginmanager.unregister(session)
        config.stash[_SESSION] = None


_BAD_MARKER = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every seedlock marker before anything runs: a bad value is a usage error."""
    for item in items:
        marker = item.get_closest_marker("seedlock")
        if marker is None:
            continue
        try:
            marker_settings(item, marker)
        except pytest.UsageError as exc:
            if not hasattr(config, "workerinput"):
                raise
            # A pytest-xdist worker cannot stop the session cleanly from here:
            # the test errors with the message instead (never a silent pass).
            item.stash[_BAD_MARKER] = str(exc)


def bad_marker(item: pytest.Item) -> str | None:
    return item.stash.get(_BAD_MARKER, None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    message = bad_marker(item)
    if message is not None:
        raise pytest.UsageError(message)


def marker_settings(item: pytest.Item, marker: pytest.Mark | None) -> tuple[Any, str]:
    """The test's `SeedLock` and ``on_new`` policy from its marker (defaults without one)."""
    from langchain_seedlock._errors import SeedLockError
    from langchain_seedlock._lock import SeedLock

    kwargs = dict(marker.kwargs) if marker is not None else {}
    where = "{}:{}: {}".format(*_location(item))
    if marker is not None and marker.args:
        raise pytest.UsageError(
            f"{where}: @pytest.mark.seedlock takes keyword arguments only "
            f"(seed=..., temperature=..., on_new=...), got {marker.args!r}"
        )
    on_new = kwargs.pop("on_new", "fail")
    if on_new not in ON_NEW:
        raise pytest.UsageError(
            f"{where}: @pytest.mark.seedlock(on_new={on_new!r}): use 'fail' or 'warn'"
        )
    kwargs.setdefault("seed", DEFAULT_SEED)
    try:
        lock = SeedLock(**kwargs)
    except (SeedLockError, TypeError) as exc:
        raise pytest.UsageError(f"{where}: @pytest.mark.seedlock: {exc}") from None
    return lock, on_new


def _location(item: pytest.Item) -> tuple[str, int, str]:
    path, line, name = item.location
    return path, (line or 0) + 1, name


@pytest.fixture
def seedlock(request: pytest.FixtureRequest) -> SeedlockTest:
    """This test's seedlock state: ``seedlock.lock`` (the `SeedLock`),
    ``seedlock.lock_model(model)`` (lock a model explicitly), ``seedlock.handler``
    (pass it in ``callbacks`` where runs do not inherit callbacks) and
    ``seedlock.calls`` (the locked calls observed so far, with their verdicts)."""
    from langchain_seedlock._pytest_session import SeedlockTest, current_test

    test = current_test(request.node)
    if test is not None:
        return test
    lock, on_new = marker_settings(request.node, request.node.get_closest_marker("seedlock"))
    return SeedlockTest(request.node.nodeid, "off", lock, on_new, None)
