"""The pytest plugin's work, for a session with a mode other than ``off``.

How a test's models are locked and observed without touching its code:

- *observe*: one LangChain configure hook (as `_autoattach` does) adds this
  session's `SeedLockCallbackHandler` to every run while a seedlock test runs;
  its monitor hands each `CallRecord` here instead of to a store. The hook's
  class is this module's handler subclass, so a handler the test passes
  itself does not keep this one out.
- *lock*: while a seedlock test runs, a call of a plain ``ChatOpenAI`` /
  ``AzureChatOpenAI`` is made by its locked twin (`lock_model` with the
  test's lock): the seed is sent and the request hash is the locked models'.
  Other chat models are locked explicitly (``seedlock.lock_model(model)``).
- *replay*: a locked OpenAI-compatible model's request is built as usual
  (so it hashes as recorded) and answered from the baseline file by
  langchain-openai's own result builder: nothing reaches the network.

The decision for each call is `_decide.classify` on the baseline's history.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.tracers.context import register_configure_hook
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI

from langchain_seedlock._baseline_file import (
    BaselineFileError,
    Entry,
    ModuleBaseline,
    Output,
    load_dir,
    merge_recorded,
    module_file,
    write_file,
)
from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._chat_models import lock_model
from langchain_seedlock._decide import Verdict, classify
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import SeedLockError
from langchain_seedlock._hashing import request_hash
from langchain_seedlock._identity import SERVERS, identity_of
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._locked_openai import _CALL_KWARG, LockedOpenAIMixin
from langchain_seedlock._record import CallRecord
from langchain_seedlock.pytest_plugin import Settings, bad_marker, marker_settings

# Verdicts of the plugin (`_decide.Verdict` values, plus two of its own).
UNRECORDED = "unrecorded"  # verify: the test's request is not in the baseline file
RECORDED = "recorded"  # record mode
REPLAYED = "replayed"  # replay mode
_PASSING = frozenset({Verdict.REPRODUCED.value, Verdict.KNOWN_VARIANT.value})
_NEW = frozenset({Verdict.NEW_VARIANT.value, Verdict.INCOMPLETE.value, UNRECORDED})


class ReplayMissError(SeedLockError, LookupError):
    """``--seedlock=replay``: the baseline file has no recording for this request."""


@dataclass(slots=True)
class LockedCall:
    """One locked model call seen in a test, and what the plugin made of it."""

    test: str
    """The test's node id."""
    request: str
    backend: str
    fingerprint: str | None
    model: str | None
    output: str
    verdict: str
    usual: str | None = None
    """verify: the request's usual output hash under the backend compared with."""
    previous_fingerprint: str | None = None
    """verify, ``explained``: the fingerprint the baseline was recorded under."""
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usual_text: str | None = None


@dataclass(slots=True)
class SeedlockTest:
    """The ``seedlock`` fixture: this test's lock, handler and observed calls."""

    nodeid: str
    mode: str
    lock: SeedLock
    on_new: str
    handler: SeedLockCallbackHandler | None
    calls: list[LockedCall] = field(default_factory=list)
    unlocked_calls: int = 0
    replay_misses: list[str] = field(default_factory=list)
    _locked: dict[int, tuple[BaseChatModel, BaseChatModel]] = field(default_factory=dict)

    def lock_model(self, model: BaseChatModel) -> BaseChatModel:
        """``model`` locked with this test's lock (`lock_model`)."""
        return lock_model(model, self.lock)

    def _twin(self, model: BaseChatModel) -> BaseChatModel:
        """The locked twin of a plain OpenAI model, made once per model and test."""
        held = self._locked.get(id(model))
        if held is None or held[0] is not model:
            held = (model, lock_model(model, self.lock))
            self._locked[id(model)] = held
        return held[1]


# -- the test that is running (one at a time per process: xdist uses processes) --------
class _Running:
    test: SeedlockTest | None = None


_RUNNING = _Running()
_STASH = pytest.StashKey[SeedlockTest]()


def current_test(item: pytest.Item) -> SeedlockTest | None:
    return item.stash.get(_STASH, None)


class _HookHolder:
    """What LangChain's configure hook reads (``.get()``): the running test's handler."""

    def get(self) -> SeedLockCallbackHandler | None:
        test = _RUNNING.test
        return test.handler if test is not None else None


class _PluginHandler(SeedLockCallbackHandler):
    """Keeps each run's output message for the baseline's text and tool calls."""

    def __init__(self, session: SeedlockSession) -> None:
        super().__init__(monitor=_Collector(session, self))
        self.messages: dict[str, BaseMessage] = {}
        self._messages_lock = threading.Lock()

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        generations = response.generations[0] if response.generations else []
        if len(generations) == 1:
            message = getattr(generations[0], "message", None)
            if isinstance(message, BaseMessage):
                with self._messages_lock:
                    self.messages[str(run_id)] = message
        super().on_llm_end(response, run_id=run_id, parent_run_id=parent_run_id, **kwargs)

    def pop_message(self, run_id: str | None) -> BaseMessage | None:
        with self._messages_lock:
            return self.messages.pop(run_id or "", None)


# Seconds a locked call in a test waits for its server's description at most.
SERVER_INFO_WAIT = 5.0


class _Collector(DriftMonitor):
    """The handler's monitor: records go to the session, not to a store."""

    def __init__(self, session: SeedlockSession, handler: _PluginHandler) -> None:
        super().__init__(None, buffer_size=0)
        self._session = session
        self._handler = handler

    def observe(self, record: CallRecord) -> list[str]:
        # Not DriftMonitor.observe (no store, no events): the record's full
        # backend identity, with the server's fields and the declared ones
        # (SEEDLOCK_BACKEND, LocalServer's flags). A test can wait for the
        # server's description (fetched since the call started) where a
        # production call never would: the same backend gets one id in a
        # baseline file whatever the call order or timing.
        if record.base_url:
            SERVERS.wait(timeout=SERVER_INFO_WAIT)
        record.identity = identity_of(record)
        self._session.observe(record, self._handler.pop_message(record.run_id))
        return []

    def report_unseeded(self, fields: Mapping[str, Any], *, source: str) -> list[str]:
        return []  # a plain OpenAI model: locked by its twin after the handler's start


_HOOK = _HookHolder()
register_configure_hook(_HOOK, True, _PluginHandler, None)  # type: ignore[arg-type]


# -- locking and replaying OpenAI-compatible models ----------------------------------------
_PLAIN_OPENAI = (ChatOpenAI, AzureChatOpenAI)
_PATCHED = ("_generate", "_agenerate", "_stream", "_astream")


def _active_test() -> SeedlockTest | None:
    test = _RUNNING.test
    if test is None or test.handler is None:
        return None
    return test


def _patched_generate(original: Callable[..., ChatResult]) -> Callable[..., ChatResult]:
    def _generate(
        self: BaseChatOpenAI, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        test = _active_test()
        if test is not None and type(self) in _PLAIN_OPENAI:
            return test._twin(self)._generate(messages, stop, run_manager, **kwargs)
        if test is not None and test.mode == "replay" and isinstance(self, LockedOpenAIMixin):
            return _SESSION_REF[0].replay(test, self, messages, stop, kwargs)
        return original(self, messages, stop, run_manager, **kwargs)

    return _generate


def _patched_agenerate(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _agenerate(
        self: BaseChatOpenAI, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        test = _active_test()
        if test is not None and type(self) in _PLAIN_OPENAI:
            return await test._twin(self)._agenerate(messages, stop, run_manager, **kwargs)
        if test is not None and test.mode == "replay" and isinstance(self, LockedOpenAIMixin):
            return _SESSION_REF[0].replay(test, self, messages, stop, kwargs)
        result: ChatResult = await original(self, messages, stop, run_manager, **kwargs)
        return result

    return _agenerate


def _patched_stream(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def _stream(
        self: BaseChatOpenAI, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        test = _active_test()
        if test is not None and type(self) in _PLAIN_OPENAI:
            yield from test._twin(self)._stream(messages, stop, run_manager, **kwargs)
        elif test is not None and test.mode == "replay" and isinstance(self, LockedOpenAIMixin):
            result = _SESSION_REF[0].replay(test, self, messages, stop, kwargs)
            yield _as_chunk(result)
        else:
            yield from original(self, messages, stop, run_manager, **kwargs)

    return _stream


def _patched_astream(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def _astream(
        self: BaseChatOpenAI, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:  # fmt: skip
        test = _active_test()
        if test is not None and type(self) in _PLAIN_OPENAI:
            async for chunk in test._twin(self)._astream(messages, stop, run_manager, **kwargs):
                yield chunk
        elif test is not None and test.mode == "replay" and isinstance(self, LockedOpenAIMixin):
            yield _as_chunk(_SESSION_REF[0].replay(test, self, messages, stop, kwargs))
        else:
            async for chunk in original(self, messages, stop, run_manager, **kwargs):
                yield chunk

    return _astream


_WRAPPERS: dict[str, Callable[[Any], Any]] = {
    "_generate": _patched_generate,
    "_agenerate": _patched_agenerate,
    "_stream": _patched_stream,
    "_astream": _patched_astream,
}
# The session whose replay answers (one per process); set while it is open.
_SESSION_REF: list[SeedlockSession] = []


def _as_chunk(result: ChatResult) -> ChatGenerationChunk:
    generation = result.generations[0]
    message = generation.message
    assert isinstance(message, AIMessage)
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            response_metadata=dict(message.response_metadata),
            tool_call_chunks=[
                {
                    "name": c["name"],
                    "args": json.dumps(c["args"]),
                    "id": c.get("id"),
                    "index": i,
                    "type": "tool_call_chunk",
                }
                for i, c in enumerate(message.tool_calls)
            ],
        ),
        generation_info=dict(generation.generation_info or {}),
    )


# -- the session ----------------------------------------------------------------------------
class SeedlockSession:
    """The plugin object registered for a session whose mode is not ``off``."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.mode = settings.mode
        self.worker = hasattr(config, "workerinput")  # a pytest-xdist worker
        try:
            self.baselines: dict[Path, ModuleBaseline] = load_dir(settings.baseline_dir)
        except BaselineFileError as exc:
            raise pytest.UsageError(f"seedlock baseline file {exc}") from None
        if self.mode == "replay" and not self.baselines:
            raise pytest.UsageError(
                f"--seedlock=replay: no baseline file under {settings.baseline_dir}; "
                "record one first with --seedlock=record"
            )
        self.handler = _PluginHandler(self)
        self.calls: list[LockedCall] = []
        self.tests_run: dict[str, list[str]] = {}  # baseline file -> test names that ran
        self._files: dict[str, tuple[str, str]] = {}  # nodeid -> (baseline file, test name)
        self._lock = threading.Lock()
        self._originals = {name: BaseChatOpenAI.__dict__[name] for name in _PATCHED}
        for name, wrap in _WRAPPERS.items():
            setattr(BaseChatOpenAI, name, wrap(self._originals[name]))
        _SESSION_REF[:] = [self]

    def close(self) -> None:
        for name, original in self._originals.items():
            setattr(BaseChatOpenAI, name, original)
        _SESSION_REF.clear()
        self.handler.close(timeout=5.0)

    # -- tests -----------------------------------------------------------------------
    def _where(self, item: pytest.Item) -> tuple[str, str]:
        path = module_file(self.settings.baseline_dir, Path(item.path), self.settings.rootdir)
        name = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
        return str(path.resolve()), name

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Any:
        marker = item.get_closest_marker("seedlock")
        fixturenames = getattr(item, "fixturenames", ())
        if (marker is None and "seedlock" not in fixturenames) or bad_marker(item):
            return (yield)
        lock, on_new = marker_settings(item, marker)
        test = SeedlockTest(item.nodeid, self.mode, lock, on_new, self.handler)
        item.stash[_STASH] = test
        path, name = self._where(item)
        with self._lock:
            self._files[item.nodeid] = (path, name)
            self.tests_run.setdefault(path, []).append(name)
        _RUNNING.test = test
        try:
            return (yield)
        finally:
            _RUNNING.test = None

    def observe(self, record: CallRecord, message: BaseMessage | None) -> None:
        test = _RUNNING.test
        if test is None:
            return
        if record.seed is None:
            test.unlocked_calls += 1
            return
        text, tool_calls = _content(message) if message is not None else (None, None)
        if text is None:
            text = record.output_text
        call = LockedCall(
            test.nodeid, record.request_hash, record.backend_id, record.system_fingerprint,
            record.response_model, record.output_hash, RECORDED, text=text,
            tool_calls=tool_calls,
        )  # fmt: skip
        if self.mode == "verify":
            self._classify(test, call, record.complete)
        elif self.mode == "replay":
            call.verdict = REPLAYED
        test.calls.append(call)
        with self._lock:
            self.calls.append(call)

    def _classify(self, test: SeedlockTest, call: LockedCall, complete: bool) -> None:
        path, name = self._files[test.nodeid]
        baseline = self.baselines.get(Path(path))
        history = baseline.history(name, call.request) if baseline is not None else {}
        if not history:
            call.verdict = UNRECORDED
            return
        decision = classify(call.output, call.backend, history, complete=complete)
        call.verdict = decision.verdict.value
        call.usual = decision.usual_output
        assert baseline is not None
        entries = baseline.entries[(name, call.request)]
        for entry in entries.values():
            if call.usual in entry.outputs:
                call.usual_text = entry.outputs[call.usual].text
                if call.backend not in entries:
                    call.previous_fingerprint = entry.fingerprint

    def replay(
        self, test: SeedlockTest, model: Any, messages: list[BaseMessage],
        stop: list[str] | None, kwargs: dict[str, Any],
    ) -> ChatResult:  # fmt: skip
        """Answer a locked OpenAI request from the baseline file."""
        call = kwargs.get(_CALL_KWARG)
        payload = model._get_request_payload(messages, stop=stop, **kwargs)
        digest = getattr(call, "request_hash", None) or request_hash(
            model._seedlock_provider, payload
        )
        path, name = self._files[test.nodeid]
        baseline = self.baselines.get(Path(path))
        found = baseline.best(name, digest) if baseline is not None else None
        if found is None or (found[1].text is None and not found[1].tool_calls):
            why = (
                "no recording" if found is None else "a recording without text (--seedlock-no-text)"
            )
            test.replay_misses.append(digest)
            raise ReplayMissError(
                f"seedlock replay: {why} for test {test.nodeid}, request {digest} in {path}. "
                "Record it with --seedlock=record (against the real backend)."
            )
        entry, output = found
        tool_calls = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("args", {}))}}
            for i, c in enumerate(output.tool_calls or [])
        ]  # fmt: skip
        wire_message: dict[str, Any] = {"role": "assistant", "content": output.text}
        if tool_calls:
            wire_message["tool_calls"] = tool_calls
        response = {
            "id": "seedlock-replay",
            "object": "chat.completion",
            "created": 0,
            "model": entry.model or payload.get("model") or "replay",
            "system_fingerprint": entry.fingerprint,
            "choices": [
                {"index": 0, "message": wire_message,
                 "finish_reason": "tool_calls" if tool_calls else "stop"}
            ],
        }  # fmt: skip
        result: ChatResult = model._create_chat_result(response)
        for generation in result.generations:
            generation.generation_info = {
                **(generation.generation_info or {}),
                "system_fingerprint": entry.fingerprint,
                "model_name": response["model"],
            }
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report: pytest.TestReport = yield
        test = current_test(item)
        if test is None or report.when != "call":
            return report
        problems = _failures(test)
        explained = [c for c in test.calls if c.verdict == Verdict.EXPLAINED.value]
        if problems:
            text = "\n".join(problems)
            if report.passed:
                report.outcome = "failed"
                report.longrepr = text
            else:
                report.sections.append(("seedlock", text))
        elif explained and report.passed:
            reason = _explained_reason(explained)
            if self.settings.strict:
                report.outcome = "failed"
                report.longrepr = reason + " (--seedlock-strict)"
            else:
                path, line, _ = item.location
                report.outcome = "skipped"
                report.longrepr = (str(path), (line or 0) + 1, f"Skipped: {reason}")
        return report

    # -- the end ---------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            self.config.workeroutput["seedlock"] = json.dumps(  # type: ignore[attr-defined]
                {"calls": [asdict(c) for c in self.calls], "tests_run": self.tests_run,
                 "files": self._files}
            )  # fmt: skip
            return
        if self.mode == "record":
            self._write()
        if self.settings.report is not None:
            self.settings.report.parent.mkdir(parents=True, exist_ok=True)
            self.settings.report.write_text(
                json.dumps(self.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: merge what a worker saw (its files are written here, once)."""
        data = getattr(node, "workeroutput", {}).get("seedlock")
        if not data:
            return
        loaded = json.loads(data)
        with self._lock:
            self.calls.extend(LockedCall(**c) for c in loaded["calls"])
            for path, names in loaded["tests_run"].items():
                self.tests_run.setdefault(path, []).extend(names)
            self._files.update({k: tuple(v) for k, v in loaded["files"].items()})

    def _write(self) -> None:
        observed: dict[str, list[Entry]] = {}
        for call in self.calls:
            path, name = self._files[call.test]
            entry = Entry(name, call.request, call.backend, call.fingerprint, call.model)
            keep_text = not self.settings.no_text
            entry.outputs[call.output] = Output(
                call.output, 1, call.text if keep_text else None,
                call.tool_calls if keep_text else None,
            )  # fmt: skip
            observed.setdefault(path, []).append(entry)
        for path, names in sorted(self.tests_run.items()):
            old = self.baselines.get(Path(path), ModuleBaseline())
            merged = merge_recorded(old, observed.get(path, []), names)
            if self.settings.no_text:
                for (test, _), backends in merged.entries.items():
                    if test in names:
                        for entry in backends.values():
                            for output in entry.outputs.values():
                                output.text, output.tool_calls = None, None
            write_file(Path(path), merged)

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for call in self.calls:
            counts[call.verdict] = counts.get(call.verdict, 0) + 1
        compared = sum(counts.get(v, 0) for v in (*_PASSING, Verdict.NEW_VARIANT.value))
        known = sum(counts.get(v, 0) for v in _PASSING)
        by_test: dict[str, list[dict[str, Any]]] = {}
        for call in self.calls:
            by_test.setdefault(call.test, []).append(
                {"request": call.request, "backend": call.backend, "output": call.output,
                 "verdict": call.verdict, "usual": call.usual}
            )  # fmt: skip
        return {
            "mode": self.mode,
            "calls": len(self.calls),
            "tests": len({c.test for c in self.calls}),
            "verdicts": dict(sorted(counts.items())),
            "reproducibility_rate": known / compared if compared else None,
            "new_variants": sorted({c.test for c in self.calls if c.verdict in _NEW}),
            "explained": sorted(
                {c.test for c in self.calls if c.verdict == Verdict.EXPLAINED.value}
            ),
            "by_test": dict(sorted(by_test.items())),
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker:
            return
        s = self.summary()
        tr = terminalreporter
        tr.section(f"seedlock ({self.mode})")
        counts = s["verdicts"]
        if self.mode == "record":
            files = len(self.tests_run)
            tr.write_line(
                f"{s['calls']} locked calls in {s['tests']} tests recorded to {files} "
                f"baseline file(s) under {self.settings.baseline_dir}"
            )
            return
        if self.mode == "replay":
            tr.write_line(f"{s['calls']} locked calls in {s['tests']} tests answered from "
                          f"{self.settings.baseline_dir} (no network)")  # fmt: skip
            return
        tr.write_line(
            f"{s['calls']} locked calls in {s['tests']} tests: "
            f"{counts.get('reproduced', 0)} reproduced, {counts.get('known_variant', 0)} known "
            f"variants, {counts.get('new_variant', 0)} new variants, "
            f"{counts.get('explained', 0)} explained (backend changed), "
            f"{counts.get(UNRECORDED, 0)} not recorded"
        )
        rate = s["reproducibility_rate"]
        if rate is not None:
            tr.write_line(f"reproducibility rate: {rate:.1%} of compared calls gave a known output")
        for test in s["new_variants"]:
            for c in s["by_test"][test]:
                if c["verdict"] in _NEW:
                    tr.write_line(
                        f"NEW {test}: request {c['request'][:12]} gave {c['verdict']} "
                        f"output {c['output'][:12]}", red=True,
                    )  # fmt: skip
        for test in s["explained"]:
            tr.write_line(f"EXPLAINED {test}: backend identity changed", yellow=True)


def _content(message: BaseMessage) -> tuple[str | None, list[dict[str, Any]] | None]:
    calls = [
        {"name": c["name"], "args": c["args"]} for c in getattr(message, "tool_calls", []) or []
    ]
    return message.text, calls or None


def _failures(test: SeedlockTest) -> list[str]:
    lines: list[str] = []
    for digest in test.replay_misses:
        lines.append(f"seedlock replay: no recording for request {digest}")
    if test.on_new == "warn":
        return lines
    for c in test.calls:
        if c.verdict == UNRECORDED:
            lines.append(
                f"seedlock: request {c.request} is not in the baseline file: record it with "
                "--seedlock=record"
            )
        elif c.verdict in _NEW:
            lines.append(
                f"seedlock: new variant under the same backend (fingerprint {c.fingerprint!r}, "
                f"backend {c.backend[:16]}): request {c.request} gave output {c.output}, "
                f"never recorded; usual output {c.usual}"
            )
            if c.text is not None and c.usual_text is not None:
                lines.append(f"    now:      {c.text[:200]!r}")
                lines.append(f"    recorded: {c.usual_text[:200]!r}")
    if lines and test.calls:
        lines.append(
            "Accept the new output with --seedlock=record, or allow it with "
            "@pytest.mark.seedlock(on_new='warn')."
        )
    return lines


def _explained_reason(explained: list[LockedCall]) -> str:
    c = explained[0]
    if c.previous_fingerprint == c.fingerprint:
        what = (
            f"same fingerprint {c.fingerprint!r}: the server's or the declared settings "
            "changed, see seedlock.backend_changed"
        )
    else:
        what = f"fingerprint {c.previous_fingerprint!r} -> {c.fingerprint!r}"
    return (
        f"seedlock: backend identity changed ({what}); {len(explained)} locked call(s) "
        "gave outputs not recorded under the new backend. Re-record with --seedlock=record."
    )
