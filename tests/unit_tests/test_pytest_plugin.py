"""The pytest plugin (``--seedlock``), run with ``pytester`` against the fake backend.

The inner test files build plain ``ChatOpenAI`` chains (no seedlock code in
them): the plugin locks and observes them. The fake backend is scripted to
drift: another answer under the same fingerprint (a new variant), another
fingerprint (explained drift).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from langchain_seedlock.testing import FakeBackend, default_reply

pytest_plugins = ["pytester"]

INNER = """
import os

import httpx2
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI


def chain():
    model = ChatOpenAI(
        model="m", base_url=os.environ["SEEDLOCK_STUB_URL"], api_key="none", max_retries=0
    )
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    return prompt | model | StrOutputParser()


@pytest.mark.seedlock(seed=7, temperature=0.5)
def test_chain():
    assert chain().invoke({"q": "Mars"})


@pytest.mark.seedlock(seed=8)
def test_stream():
    assert "".join(chain().stream({"q": "Venus"}))


async def test_async(seedlock):
    # A client of this test's event loop (langchain-openai's default one is per process).
    model = ChatOpenAI(
        model="m", base_url=os.environ["SEEDLOCK_STUB_URL"], api_key="none", max_retries=0,
        http_async_client=httpx2.AsyncClient(),
    )
    message = await model.ainvoke("Io")
    if seedlock.mode != "off":
        assert seedlock.calls[-1].request == message.response_metadata["seedlock_request_hash"]


def test_not_seedlock():
    assert True
"""


def _plugin_args() -> list[str]:
    """``-p`` the plugin unless its entry point is installed (it then loads itself)."""
    for ep in metadata.entry_points(group="pytest11"):
        if ep.value == "langchain_seedlock.pytest_plugin":
            return []
    return ["-p", "langchain_seedlock.pytest_plugin"]


@pytest.fixture
def project(pytester: pytest.Pytester, stub: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEEDLOCK_STUB_URL", stub.base_url)
    pytester.makepyfile(test_pipeline=INNER)
    return pytester.path


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", *args)


def baseline(project: Path, module: str = "test_pipeline") -> list[dict[str, object]]:
    path = project / "tests" / "__seedlock__" / f"{module}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_then_verify_passes(pytester: pytest.Pytester, project: Path) -> None:
    result = run(pytester, "--seedlock=record")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*seedlock (record)*", "3 locked calls in 3 tests recorded*"])
    lines = baseline(project)
    assert lines[0] == {"seedlock_baseline": 1}
    assert [line["test"] for line in lines[1:]] == ["test_async", "test_chain", "test_stream"]
    chain = lines[2]
    assert chain["fingerprint"] == "fp_stub_1"
    assert chain["outputs"][0]["text"] == "seed=7 t=0.5 says: Mars"  # the lock was sent
    first = (project / "tests/__seedlock__/test_pipeline.jsonl").read_bytes()

    # The default mode is verify once a baseline file exists.
    result = run(pytester)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*seedlock (verify)*", "3 locked calls in 3 tests: 3 reproduced, 0 known variants, "
         "0 new variants, 0 explained*", "reproducibility rate: 100.0%*"]
    )  # fmt: skip

    # Re-recording the same outputs writes the same lines (counts add up).
    run(pytester, "--seedlock=record").assert_outcomes(passed=4)
    again = baseline(project)
    assert [line["outputs"][0]["count"] for line in again[1:]] == [2, 2, 2]
    assert len(first.splitlines()) == len(again)


def test_new_variant_under_same_backend_fails(
    pytester: pytest.Pytester, project: Path, stub: FakeBackend
) -> None:
    run(pytester, "--seedlock=record").assert_outcomes(passed=4)
    stub.reply = "something else entirely"
    result = run(pytester, "--seedlock=verify")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*seedlock: new variant under the same backend (fingerprint 'fp_stub_1'*",
            "*now:      'something else entirely'",
            "*recorded: 'seed=7 t=0.5 says: Mars'",
            "*0 reproduced, 0 known variants, 3 new variants*",
            "NEW test_pipeline.py::test_chain*",
        ]
    )


def test_known_variants_pass(
    pytester: pytest.Pytester, stub: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDLOCK_STUB_URL", stub.base_url)
    pytester.makepyfile(
        test_noisy="""
import os
import pytest
from langchain_openai import ChatOpenAI

@pytest.mark.seedlock(seed=3)
def test_noisy():
    model = ChatOpenAI(model="m", base_url=os.environ["SEEDLOCK_STUB_URL"], api_key="x")
    for _ in range(8):
        model.invoke("hello")
"""
    )
    stub.variants = [("usual answer", 3.0), ("rare answer", 1.0)]
    run(pytester, "--seedlock=record").assert_outcomes(passed=1)
    outputs = baseline(pytester.path, "test_noisy")[1]["outputs"]  # type: ignore[index]
    assert [o["text"] for o in outputs] == ["usual answer", "rare answer"]  # type: ignore[index]
    stub.reset()
    stub.variants = [("usual answer", 3.0), ("rare answer", 1.0)]
    result = run(pytester, "--seedlock=verify")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*0 new variants*"])


def test_backend_change_is_explained_skip_or_strict_failure(
    pytester: pytest.Pytester, project: Path, stub: FakeBackend
) -> None:
    run(pytester, "--seedlock=record").assert_outcomes(passed=4)
    stub.fingerprint, stub.reply = "fp_stub_2", "a new model answers"
    result = run(pytester, "--seedlock=verify", "-rs")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        ["*3 explained (backend changed)*",
         "*backend identity changed (fingerprint 'fp_stub_1' -> 'fp_stub_2')*"]
    )  # fmt: skip
    result = run(pytester, "--seedlock=verify", "--seedlock-strict")
    result.assert_outcomes(passed=1, failed=3)
    # The same output under a new fingerprint reproduced: nothing to explain.
    stub.reply = default_reply
    run(pytester, "--seedlock=verify", "--seedlock-strict").assert_outcomes(passed=4)


def test_replay_answers_without_network(
    pytester: pytest.Pytester, project: Path, stub: FakeBackend
) -> None:
    run(pytester, "--seedlock=record").assert_outcomes(passed=4)
    stub.reset()
    stub.status = 500  # any request that reaches the server fails the test
    report = project / "out" / "seedlock.json"
    result = run(pytester, "--seedlock=replay", f"--seedlock-report={report}")
    result.assert_outcomes(passed=4)
    assert stub.requests == []
    result.stdout.fnmatch_lines(["3 locked calls in 3 tests answered from*(no network)"])
    data = json.loads(report.read_text())
    assert data["mode"] == "replay"
    assert data["verdicts"] == {"replayed": 3}

    # A request that was never recorded fails, naming the test and the hash.
    pytester.makepyfile(test_pipeline=INNER.replace('"Mars"', '"Jupiter"'))
    result = run(pytester, "--seedlock=replay")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*ReplayMissError: seedlock replay: no recording for test "
         "test_pipeline.py::test_chain, request ???????????????*"]
    )  # fmt: skip
    assert stub.requests == []


def test_no_text_records_hashes_only(pytester: pytest.Pytester, project: Path) -> None:
    run(pytester, "--seedlock=record", "--seedlock-no-text").assert_outcomes(passed=4)
    for line in baseline(project)[1:]:
        assert all("text" not in o for o in line["outputs"])  # type: ignore[attr-defined]
    run(pytester, "--seedlock=verify").assert_outcomes(passed=4)
    result = run(pytester, "--seedlock=replay")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*a recording without text (--seedlock-no-text)*"])


def test_unrecorded_request_fails_verify(pytester: pytest.Pytester, project: Path) -> None:
    run(pytester, "--seedlock=record").assert_outcomes(passed=4)
    pytester.makepyfile(test_pipeline=INNER.replace('"Mars"', '"Jupiter"'))
    result = run(pytester, "--seedlock=verify")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*is not in the baseline file: record it with --seedlock=record*"])


def test_off_mode_and_no_baseline_do_nothing(
    pytester: pytest.Pytester, project: Path, stub: FakeBackend
) -> None:
    # A subprocess: in-process, CPython 3.11.7 fails this run with "AST constructor
    # recursion depth mismatch" (a nested pytest session's depth; not the plugin's).
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)  # no baseline file: off
    assert "seedlock (" not in result.stdout.str()
    assert all("seed" not in body for body in stub.requests)  # nothing was locked
    assert not (project / "tests" / "__seedlock__").exists()


def test_xdist_workers_record_one_file(pytester: pytest.Pytester, project: Path) -> None:
    pytest.importorskip("xdist")  # in the test extra: CI has it
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "-p", "no:cacheprovider", "-n", "4", "--seedlock=record"
    )
    result.assert_outcomes(passed=4)
    lines = baseline(project)
    assert [line["test"] for line in lines[1:]] == ["test_async", "test_chain", "test_stream"]
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "-p", "no:cacheprovider", "-n", "4", "--seedlock=verify"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["3 locked calls in 3 tests: 3 reproduced*"])


# -- bad input: usage errors naming the place ----------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "*test_pipeline.jsonl:1: not valid JSON*"),
        (
            '{"seedlock_baseline": 9}\n',
            "*test_pipeline.jsonl:1: format version 9 is not supported*",
        ),
        (
            '{"seedlock_baseline": 1}\n{"test": "t", "request": "abc", "backend": "b", '
            '"outputs": []}\n',
            "*test_pipeline.jsonl:2: 'request' must be a sha256 hash*",
        ),
        (
            '{"seedlock_baseline": 1}\n{"test": "t", "request": "' + "a" * 64 + '", '
            '"backend": "b", "outputs": [{"hash": "' + "b" * 64 + '", "count": 0}]}\n',
            "*test_pipeline.jsonl:2: output 'count' must be an integer >= 1, got 0*",
        ),
        (
            '{"seedlock_baseline": 1}\n{"tset": "t"}\n',
            "*test_pipeline.jsonl:2: unknown key(s) ?'tset'?*",
        ),
    ],
)
def test_corrupt_baseline_is_a_usage_error(
    pytester: pytest.Pytester, project: Path, content: str, message: str
) -> None:
    path = project / "tests" / "__seedlock__" / "test_pipeline.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_unknown_mode_is_a_usage_error(pytester: pytest.Pytester, project: Path) -> None:
    result = run(pytester, "--seedlock=recrod")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --seedlock: invalid choice: 'recrod'*"])
    pytester.makeini(
        "[pytest]\nseedlock_mode = always\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*seedlock_mode = 'always' in *tox.ini is not a seedlock mode*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("seed='7'", "*test_bad.py:4: *SeedLock field 'seed': must be an integer*"),
        ("seed=1, temperature=9", "*test_bad.py:4: *'temperature': must be between 0 and 2*"),
        ("on_new='ignore'", "*test_bad.py:4: *on_new='ignore'*use 'fail' or 'warn'*"),
        ("seed=1, tempreature=0.5", "*'tempreature': is not a lockable parameter*"),
        ("7", "*test_bad.py:4: *keyword arguments only*"),
    ],
)
def test_bad_marker_is_a_usage_error(
    pytester: pytest.Pytester, project: Path, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_bad=f"import pytest\n\n\n@pytest.mark.seedlock({marker})\ndef test_x():\n    pass\n"
    )
    result = run(pytester, "--seedlock=off")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_warn_policy_and_explicit_lock(
    pytester: pytest.Pytester, stub: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDLOCK_STUB_URL", stub.base_url)
    pytester.makepyfile(
        test_warn="""
import os
import pytest
from langchain_openai import ChatOpenAI

@pytest.mark.seedlock(seed=5, on_new="warn")
def test_warned(seedlock):
    model = seedlock.lock_model(
        ChatOpenAI(model="m", base_url=os.environ["SEEDLOCK_STUB_URL"], api_key="x")
    )
    assert model.invoke("hi").response_metadata["seed"] == 5
"""
    )
    run(pytester, "--seedlock=record").assert_outcomes(passed=1)
    stub.reply = "changed"
    result = run(pytester, "--seedlock=verify")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 new variants*", "NEW test_warn.py::test_warned*"])


def test_bad_marker_under_xdist_errors_the_test(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        test_bad="import pytest\n\n\n@pytest.mark.seedlock(seed='x')\ndef test_x():\n    pass\n"
    )
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "-p", "no:cacheprovider", "-n", "2", "--seedlock=verify"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*UsageError: test_bad.py:4: test_x: @pytest.mark.seedlock*"])
