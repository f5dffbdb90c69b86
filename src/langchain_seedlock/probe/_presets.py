"""The probe's presets: the experiments people cite, run on your backend.

- ``cookbook``: OpenAI's cookbook "Reproducible outputs with the seed
  parameter", with its exact protocol, and its published figures beside ours.
- ``batch-invariance``: N identical requests at temperature 0 sent with
  concurrency 1, 4 and 16 (Thinking Machines, "Defeating Nondeterminism in
  LLM Inference", 2025): does the answer depend on what else is in the batch?
- ``seed-honored``: does the backend apply the seed at all?

Each returns a `PresetResult`: the runs, a summary table, a one-line
verdict, and its renderings (plain text, JSON, self-contained HTML).
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_seedlock._errors import ProbeError
from langchain_seedlock._redact import redact_optional_url
from langchain_seedlock._report import _html
from langchain_seedlock.probe._runner import (
    ProbeRun,
    build_models,
    make_handler,
    plain_model,
    run_arm,
)
from langchain_seedlock.probe._stats import (
    cosine_distance,
    exact_match_rate,
    first_divergence,
    mean_pairwise,
    text_distance,
)

if TYPE_CHECKING:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.embeddings import Embeddings

    from langchain_seedlock._store._base import BaselineStore
    from langchain_seedlock.local import LocalServer

Message = tuple[str, str]
PresetProgress = Callable[[str, int, int], None]
"""``progress(phase, calls_done, calls_total)`` over the whole preset."""

PRESETS = ("cookbook", "batch-invariance", "seed-honored")

# OpenAI cookbook, "How to make your completions outputs consistent with the
# new seed parameter" (gpt-3.5-turbo-1106): its prompt, settings and results.
COOKBOOK_MESSAGES: tuple[Message, ...] = (
    ("system", "You are a helpful assistant."),
    ("user", "Generate a short excerpt of news about a journey to Mars."),
)
COOKBOOK_MAX_TOKENS = 200
COOKBOOK_RUNS = 5
COOKBOOK_SEED = 123
COOKBOOK_UNSEEDED_TEMPERATURE = 0.7
COOKBOOK_SEEDED_TEMPERATURE = 0.0
COOKBOOK_MODEL = "gpt-3.5-turbo-1106"
COOKBOOK_UNSEEDED_DISTANCE = 0.1137
COOKBOOK_SEEDED_DISTANCE = 0.0449
COOKBOOK_SEEDED_DISTINCT = 3  # of 5, all under one system_fingerprint

BATCH_RUNS = 16
BATCH_LEVELS = (1, 4, 16)
BATCH_MAX_TOKENS = 80
# The two embedded-server setups the batch-invariance preset compares: llama-server's
# own defaults, and the setup that decodes each request alone.
BATCH_LOCAL_SETUPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("llama-server defaults (4 slots, unified KV cache, prompt cache)", {"slots": None}),
    ("-np 1 --no-cache-prompt", {"slots": 1, "cache_prompt": False}),
)
BATCH_INVARIANT_SETTINGS = (
    "Batch-invariant settings: llama.cpp: one slot and no prompt cache "
    "(-np 1 --no-cache-prompt; `seedlock serve --slots 1 --no-cache-prompt`), so each "
    "request is decoded alone and never reuses a KV prefix computed inside another batch; "
    "vLLM: VLLM_BATCH_INVARIANT=1; SGLang: --enable-deterministic-inference. "
    "Elsewhere the answer at temperature 0 can depend on the other requests in flight."
)

SEED_HONORED_RUNS = 2
SEED_HONORED_TEMPERATURE = 1.0
SEED_HONORED_MAX_TOKENS = 64

DISTANCE_NOTE = (
    "Distance: mean over every pair of runs of 1 - difflib ratio (character-level "
    "edit similarity; offline, no model; 0 = identical, 1 = nothing in common). The "
    "cookbook's figures are cosine distances between OpenAI embeddings of the answers: "
    "they measure meaning, not wording, so two different news excerpts about Mars are "
    "~0.1 apart there and 0.6-0.8 apart here. Both are 0 for identical answers and grow "
    "as answers differ: compare seed vs no seed, and 0 vs not 0, not the absolute values "
    "across the two kinds; --embeddings-model gives the cookbook's kind of distance on an "
    "endpoint that serves embeddings."
)


# -- results -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Group:
    """Runs of one request under one condition (an arm, a concurrency, a seed)."""

    section: str
    label: str
    seed: int | None
    temperature: float
    concurrency: int
    runs: tuple[ProbeRun, ...]
    expect_identical: bool
    """True when the runs should all be identical (what ``--fail-under`` checks)."""
    distinct: int
    exact_match_rate: float
    mean_pairwise_distance: float
    distance_kind: str
    first_divergence: int | None
    fingerprints: tuple[str | None, ...]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.runs]

    @property
    def tarr(self) -> float:
        """TARr@N of this one request: 1.0 when all N outputs are identical."""
        return 1.0 if self.distinct == 1 else 0.0

    def identical_text(self) -> str:
        """``"5/5 identical"`` or ``"3 distinct of 5"``."""
        n = len(self.runs)
        return f"{n}/{n} identical" if self.distinct == 1 else f"{self.distinct} distinct of {n}"

    @classmethod
    def compute(
        cls,
        *,
        section: str,
        label: str,
        seed: int | None,
        temperature: float,
        concurrency: int,
        runs: Sequence[ProbeRun],
        expect_identical: bool,
        embeddings: Embeddings | None = None,
    ) -> Group:
        texts = [r.text for r in runs]
        if embeddings is not None:
            mean = mean_pairwise(embeddings.embed_documents(texts), cosine_distance)
            kind = "cosine"
        else:
            mean = mean_pairwise(texts, text_distance)
            kind = "text"
        return cls(
            section=section,
            label=label,
            seed=seed,
            temperature=temperature,
            concurrency=concurrency,
            runs=tuple(runs),
            expect_identical=expect_identical,
            distinct=len(set(texts)),
            exact_match_rate=exact_match_rate(texts),
            mean_pairwise_distance=mean,
            distance_kind=kind,
            first_divergence=first_divergence(texts),
            fingerprints=tuple(dict.fromkeys(r.system_fingerprint for r in runs)),
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            k: getattr(self, k)
            for k in (
                "section", "label", "seed", "temperature", "concurrency", "expect_identical",
                "distinct", "exact_match_rate", "mean_pairwise_distance", "distance_kind",
                "first_divergence",
            )
        }  # fmt: skip
        data["tarr"] = self.tarr
        data["fingerprints"] = list(self.fingerprints)
        data["runs"] = [asdict(r) for r in self.runs]
        return data


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    direction: str
    bars: tuple[_html.Bar, ...]
    legend: tuple[str, ...] = ()


@dataclass(frozen=True)
class PresetResult:
    """The outcome of a preset: what was sent where, the runs, and the conclusion.

    ``to_dict()`` is the ``--json`` document (schema ``seedlock.probe.preset/1``),
    ``to_html()`` the self-contained ``--html`` page, ``to_text(full=...)``
    the terminal report; ``verdict`` is its one-line conclusion.
    """

    preset: str
    model: str
    base_url: str | None
    messages: tuple[Message, ...]
    settings: dict[str, Any]
    servers: dict[str, dict[str, Any]]
    """Server settings per section (one section unless the preset started servers)."""
    groups: tuple[Group, ...]
    summary_head: tuple[str, ...]
    summary_rows: tuple[tuple[str, ...], ...]
    verdict: str
    started_at: float
    duration_s: float
    notes: tuple[str, ...] = ()
    charts: tuple[Chart, ...] = field(default=(), repr=False)

    @property
    def started_iso(self) -> str:
        return datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds")

    def passed(self, fail_under: float) -> bool:
        """True when every group expected to be identical has an exact-match
        rate of at least ``fail_under``."""
        return all(g.exact_match_rate >= fail_under for g in self.groups if g.expect_identical)

    # -- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "seedlock.probe.preset/1",
            "preset": self.preset,
            "model": self.model,
            "base_url": redact_optional_url(self.base_url),
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "settings": self.settings,
            "servers": self.servers,
            "started_at": self.started_iso,
            "duration_s": self.duration_s,
            "summary": {
                "head": list(self.summary_head),
                "rows": [list(r) for r in self.summary_rows],
            },
            "groups": [g.to_dict() for g in self.groups],
            "notes": list(self.notes),
            "verdict": self.verdict,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    # -- text ------------------------------------------------------------------------
    def to_text(self, *, full: bool = False) -> str:
        """The terminal report; answers are excerpts unless ``full``."""
        lines = [
            f"seedlock probe --preset {self.preset} · model {self.model}"
            + (f" · {redact_optional_url(self.base_url)}" if self.base_url else ""),
            f"started {self.started_iso} · {self.duration_s:.1f} s",
            "settings: " + _kv(self.settings),
        ]
        for section, server in self.servers.items():
            lines.append(f"server{f' [{section}]' if section else ''}: {_kv(server)}")
        lines.append("prompt:")
        lines += [f"  {role}: {content}" for role, content in self.messages]
        for group in self.groups:
            where = f"[{group.section}] " if group.section else ""
            lines.append("")
            lines.append(f"{where}{group.label}: {group.identical_text()}")
            for text, indexes, fp, departs in _distinct_outputs(group):
                runs = ",".join(f"#{i + 1}" for i in indexes)
                shown = text if full else _excerpt(text)
                where = f", {departs}" if group.distinct > 1 else ""
                lines.append(f"  x{len(indexes)} ({runs}) fp={fp}{where}: {shown}")
        lines.append("")
        widths = [
            max(len(row[i]) for row in (self.summary_head, *self.summary_rows))
            for i in range(len(self.summary_head))
        ]
        for row in (self.summary_head, *self.summary_rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if self.notes:
            lines.append("")
            lines += list(self.notes)
        lines.append(
            "(xN: the runs that gave this answer; 'differs from char N': where it departs from "
            "the reference, the most common answer)"
        )
        if not full:
            lines.append("(answers shortened; --full prints them whole, --html/--json keep them)")
        return "\n".join(lines)

    # -- HTML ------------------------------------------------------------------------
    def _html_body(self) -> str:
        esc = html.escape
        prompt = "".join(
            f"<tr><th>{esc(role)}</th><td><pre class='answer'>{esc(content)}</pre></td></tr>"
            for role, content in self.messages
        )
        servers = _html.table(
            ("section", "server settings"),
            [(section or "—", _kv(server)) for section, server in self.servers.items()],
        )
        charts = "".join(
            f"<figure>{_html.bar_chart(c.title, c.direction, c.bars, c.legend)}</figure>"
            for c in self.charts
        )
        groups = []
        for group in self.groups:
            rows = [
                (
                    str(len(indexes)),
                    ", ".join(str(i + 1) for i in indexes),
                    _html.Raw(f"<code>{esc(str(fp))}</code>"),
                    departs,
                    _html.Raw(f"<pre class='answer'>{esc(text)}</pre>"),
                )
                for text, indexes, fp, departs in _distinct_outputs(group)
            ]
            where = f"{group.section} — " if group.section else ""
            groups.append(
                f"<h3>{esc(where + group.label)}: {esc(group.identical_text())}</h3>"
                + _html.table(
                    (
                        "runs",
                        "run #",
                        "system_fingerprint",
                        "vs the reference (most common)",
                        "answer",
                    ),
                    rows,
                )
            )
        notes = "".join(f"<p><small>{esc(n)}</small></p>" for n in self.notes)
        return (
            '<div class="seedlock-probe">'
            f"<h2>seedlock probe --preset {esc(self.preset)} — {esc(self.model)}</h2>"
            f'<p class="verdict">{esc(self.verdict)}</p>'
            f"<p>Started {esc(self.started_iso)} · {self.duration_s:.1f} s · "
            f"{esc(redact_optional_url(self.base_url) or '')}<br>"
            f"Settings: {esc(_kv(self.settings))}</p>"
            f"<h3>Prompt</h3><table>{prompt}</table>{servers}{charts}"
            f"{_html.table(self.summary_head, self.summary_rows)}{notes}{''.join(groups)}</div>"
        )

    def to_html(self) -> str:
        """A self-contained HTML page (inline CSS and SVG, full answers)."""
        return _html.page(
            f"seedlock probe --preset {self.preset} — {self.model}",
            self._html_body(),
            generated_at=self.started_at,
        )

    def _repr_html_(self) -> str:
        return self._html_body()


def _kv(data: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items() if v is not None) or "unknown"


def _excerpt(text: str, chars: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def _distinct_outputs(group: Group) -> list[tuple[str, list[int], str | None, str]]:
    """``(text, run indexes, fingerprint, where it departs from the reference)``
    per distinct output, most common first; the reference is the first one
    (the most common output; on a tie, the first seen)."""
    by_text: dict[str, list[int]] = {}
    for run in group.runs:
        by_text.setdefault(run.text, []).append(run.index)
    fps = {r.text: r.system_fingerprint for r in group.runs}
    order = [text for text, _ in Counter(group.texts).most_common()]
    return [
        (
            text,
            by_text[text],
            fps[text],
            "reference" if i == 0 else f"differs from char {first_divergence([order[0], text])}",
        )
        for i, text in enumerate(order)
    ]


# -- running -------------------------------------------------------------------------
class _Counter:
    """Turns per-group progress into ``progress(phase, done, total)`` over the preset."""

    def __init__(self, progress: PresetProgress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def group(self, phase: str) -> Callable[[str, int, int], None] | None:
        if self.progress is None:
            return None
        start = self.done
        progress = self.progress

        def report(_arm: str, done: int, _runs: int) -> None:
            self.done = start + done
            progress(phase, self.done, self.total)

        return report


def _check(runs: int, **positive: int) -> None:
    if runs < 1:
        raise ProbeError(f"runs must be >= 1 (got {runs})")
    for name, value in positive.items():
        if value < 1:
            raise ProbeError(f"{name} must be >= 1 (got {value})")


def run_cookbook(
    *,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    runs: int = COOKBOOK_RUNS,
    seed: int = COOKBOOK_SEED,
    max_tokens: int = COOKBOOK_MAX_TOKENS,
    concurrency: int = 1,
    store: BaselineStore | str | None = None,
    handler: BaseCallbackHandler | None = None,
    embeddings: Embeddings | None = None,
    server: dict[str, Any] | None = None,
    progress: PresetProgress | None = None,
    timeout: float = 120.0,
) -> PresetResult:
    """The cookbook's experiment: arm 1 at temperature 0.7 without a seed,
    arm 2 with ``seed`` at temperature 0; same messages and ``max_tokens``.

    Arm 2 goes through `LockedChatOpenAI` and `SeedLockCallbackHandler`, so
    its baselines reach ``store`` (None: memory) as in the default probe.
    """
    _check(runs, concurrency=concurrency)
    counter = _Counter(progress, 2 * runs)
    started_at, t0 = time.time(), time.monotonic()
    unseeded_model = plain_model(
        model=model, base_url=base_url, api_key=api_key,
        temperature=COOKBOOK_UNSEEDED_TEMPERATURE, max_tokens=max_tokens, timeout=timeout,
    )  # fmt: skip
    _, seeded_model = build_models(
        model=model, base_url=base_url, api_key=api_key, seed=seed,
        temperature=COOKBOOK_SEEDED_TEMPERATURE, max_tokens=max_tokens, timeout=timeout,
    )  # fmt: skip
    own_handler = handler is None
    handler = handler or make_handler(store)
    arms = []
    for label, chat_model, arm_seed, temperature, callbacks in (
        ("arm 1: temperature 0.7, no seed", unseeded_model, None,
         COOKBOOK_UNSEEDED_TEMPERATURE, ()),
        (f"arm 2: seed {seed}, temperature 0", seeded_model, seed, COOKBOOK_SEEDED_TEMPERATURE,
         (handler,)),
    ):  # fmt: skip
        outputs = run_arm(
            chat_model, arm=label, prompt=COOKBOOK_MESSAGES, runs=runs, seed=arm_seed,
            concurrency=concurrency, callbacks=callbacks, progress=counter.group(label),
        )  # fmt: skip
        arms.append(
            Group.compute(
                section="", label=label, seed=arm_seed, temperature=temperature,
                concurrency=concurrency, runs=outputs, expect_identical=arm_seed is not None,
                embeddings=embeddings,
            )
        )  # fmt: skip
    if own_handler:
        close = getattr(handler, "close", None)
        if callable(close):
            close()  # wait for the baselines to reach the store
    u, s = arms
    ud, sd = u.mean_pairwise_distance, s.mean_pairwise_distance
    cu, cs = COOKBOOK_UNSEEDED_DISTANCE, COOKBOOK_SEEDED_DISTANCE
    kind = "cosine of embeddings" if s.distance_kind == "cosine" else "text"

    def fps(g: Group) -> str:
        return f"{len(g.fingerprints)}: " + ", ".join(str(f) for f in g.fingerprints)

    rows = (
        ("distinct outputs", f"{u.distinct}/{runs}", f"{s.distinct}/{runs}",
         "—", f"{COOKBOOK_SEEDED_DISTINCT}/{COOKBOOK_RUNS}"),
        (f"mean pairwise distance ({kind})", f"{u.mean_pairwise_distance:.4f}",
         f"{s.mean_pairwise_distance:.4f}", f"{COOKBOOK_UNSEEDED_DISTANCE}",
         f"{COOKBOOK_SEEDED_DISTANCE}"),
        ("first divergence (char)", _div(u), _div(s), "—", "—"),
        ("fingerprints", fps(u), fps(s), "—", "1"),
    )  # fmt: skip
    head = ("", "arm 1 (ours)", "arm 2 (ours)", "arm 1 (cookbook)", "arm 2 (cookbook)")
    honoured = "seed honoured" if s.distinct == 1 else "seed not reproducing"
    verdict = (
        f"{honoured}: {s.identical_text()} with seed {seed} at temperature 0 "
        f"(cookbook, {COOKBOOK_MODEL}: {COOKBOOK_SEEDED_DISTINCT} distinct of {COOKBOOK_RUNS}); "
        f"without seed at 0.7: {u.distinct}/{runs} distinct; mean distance "
        f"{u.mean_pairwise_distance:.3f} -> {s.mean_pairwise_distance:.3f} "
        f"(cookbook {COOKBOOK_UNSEEDED_DISTANCE} -> {COOKBOOK_SEEDED_DISTANCE})"
    )
    charts = (
        Chart(
            "Runs identical to the arm's most common answer",
            "higher is better: 100% = every run gave the same answer",
            tuple(
                _html.Bar(g.label, g.exact_match_rate, f"{g.exact_match_rate:.0%}", i)
                for i, g in enumerate(arms)
            ),
        ),
        Chart(
            "Mean pairwise distance between the runs' answers",
            "lower is better: 0 = identical answers (ours: text distance; cookbook: "
            "embedding distance, not the same scale)",
            (
                _html.Bar("arm 1, ours", ud, f"{ud:.4f}"),
                _html.Bar("arm 1, cookbook", cu, f"{cu}", 1),
                _html.Bar("arm 2, ours", sd, f"{sd:.4f}"),
                _html.Bar("arm 2, cookbook", cs, f"{cs}", 1),
            ),
            ("ours", f"cookbook ({COOKBOOK_MODEL})"),
        ),
    )  # fmt: skip
    return PresetResult(
        preset="cookbook",
        model=model,
        base_url=redact_optional_url(base_url),
        messages=COOKBOOK_MESSAGES,
        settings={
            "runs_per_arm": runs,
            "max_tokens": max_tokens,
            "seed": seed,
            "concurrency": concurrency,
        },
        servers={"": dict(server or {})},
        groups=tuple(arms),
        summary_head=head,
        summary_rows=rows,
        verdict=verdict,
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        notes=(DISTANCE_NOTE if s.distance_kind == "text" else _EMBEDDINGS_NOTE,),
        charts=charts,
    )


_EMBEDDINGS_NOTE = (
    "Distance: mean over every pair of runs of the cosine distance between the answers' "
    "embeddings, the cookbook's kind of distance (its own figures used OpenAI embeddings)."
)


def _div(group: Group) -> str:
    return "—" if group.first_divergence is None else str(group.first_divergence)


def _messages(prompt: str | None) -> tuple[Message, ...]:
    """The cookbook's messages, with ``prompt`` as the user message if given."""
    if prompt is None:
        return COOKBOOK_MESSAGES
    return (COOKBOOK_MESSAGES[0], ("user", prompt))


def _batch_section(
    *,
    section: str,
    model: str,
    base_url: str | None,
    api_key: str | None,
    messages: tuple[Message, ...],
    runs: int,
    levels: Sequence[int],
    seed: int,
    max_tokens: int,
    counter: _Counter,
    timeout: float,
) -> list[Group]:
    # A plain seeded model, no lock and no handler: this preset provokes
    # variants on purpose and must not write them to the store as baselines.
    chat_model = plain_model(
        model=model, base_url=base_url, api_key=api_key, seed=seed,
        temperature=0.0, max_tokens=max_tokens, timeout=timeout,
    )  # fmt: skip
    groups = []
    for level in levels:
        label = f"concurrency {level}"
        phase = f"{section}: {label}" if section else label
        outputs = run_arm(
            chat_model, arm=label, prompt=messages, runs=runs, seed=seed,
            concurrency=level, progress=counter.group(phase),
        )  # fmt: skip
        groups.append(
            Group.compute(
                section=section, label=label, seed=seed, temperature=0.0, concurrency=level,
                runs=outputs, expect_identical=True,
            )
        )  # fmt: skip
    return groups


def run_batch_invariance(
    *,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    prompt: str | None = None,
    runs: int = BATCH_RUNS,
    levels: Sequence[int] = BATCH_LEVELS,
    seed: int = COOKBOOK_SEED,
    max_tokens: int = BATCH_MAX_TOKENS,
    server: dict[str, Any] | None = None,
    local_setups: Sequence[tuple[str, dict[str, Any]]] | None = None,
    progress: PresetProgress | None = None,
    timeout: float = 300.0,
) -> PresetResult:
    """``runs`` identical requests at temperature 0 (seeded), sent at each
    concurrency in ``levels``; per level: distinct completions, TARr@N and the
    first divergence.

    With ``base_url``, the one server there is measured (``server``: its
    settings, for the report). Without it, each of ``local_setups``
    (``(label, LocalServer kwargs)``; default: llama-server's defaults and
    ``-np 1 --no-cache-prompt``) is started in turn on the embedded backend.
    """
    _check(runs)
    if not levels or any(level < 1 for level in levels):
        raise ProbeError(f"concurrency levels must be >= 1 (got {list(levels)})")
    if base_url is not None and local_setups is not None:
        raise ProbeError("give base_url (one server) or local_setups (embedded servers), not both")
    messages = _messages(prompt)
    setups = list(local_setups or BATCH_LOCAL_SETUPS) if base_url is None else [("", {})]
    counter = _Counter(progress, len(setups) * len(levels) * runs)
    started_at, t0 = time.time(), time.monotonic()
    groups: list[Group] = []
    servers: dict[str, dict[str, Any]] = {}
    for label, kwargs in setups:
        common = dict(
            model=model, api_key=api_key, messages=messages, runs=runs, levels=levels,
            seed=seed, max_tokens=max_tokens, counter=counter, timeout=timeout,
        )  # fmt: skip
        if base_url is not None:
            servers[label] = dict(server or {})
            groups += _batch_section(section=label, base_url=base_url, **common)  # type: ignore[arg-type]
            continue
        from langchain_seedlock.local import LocalServer

        with LocalServer(**kwargs) as local:
            servers[label] = describe_local_server(local)
            groups += _batch_section(section=label, base_url=local.base_url, **common)  # type: ignore[arg-type]
    verdicts = []
    for label in servers:
        mine = [g for g in groups if g.section == label]
        invariant = all(g.distinct == 1 for g in mine)
        counts = ", ".join(str(g.distinct) for g in mine)
        at = ", ".join(str(g.concurrency) for g in mine)
        name = f"{label}: " if label else ""
        verdicts.append(
            f"{name}{'batch-invariant' if invariant else 'NOT batch-invariant'} "
            f"(distinct completions of {runs} at concurrency {at}: {counts})"
        )
    rows = tuple(
        (g.section or "—", str(g.concurrency), f"{g.distinct}/{runs}", f"{g.tarr:.0f}",
         f"{g.exact_match_rate:.0%}", _div(g))
        for g in groups
    )  # fmt: skip
    head = ("server", "concurrency", "distinct", f"TARr@{runs}", "most common share",
            "first divergence (char)")  # fmt: skip
    sections = list(servers)
    chart = Chart(
        "Runs identical to the most common completion, per concurrency",
        "higher is better: 100% = batch-invariant (the same answer whatever the load)",
        tuple(
            _html.Bar(
                f"{'setup ' + str(sections.index(g.section) + 1) + ', ' if g.section else ''}"
                f"concurrency {g.concurrency}",
                g.exact_match_rate,
                f"{g.exact_match_rate:.0%} ({g.distinct} distinct)",
                sections.index(g.section),
            )
            for g in groups
        ),
        tuple(f"setup {i + 1}: {s}" for i, s in enumerate(sections)) if sections != [""] else (),
    )
    return PresetResult(
        preset="batch-invariance",
        model=model,
        base_url=redact_optional_url(base_url),
        messages=messages,
        settings={
            "runs_per_level": runs,
            "concurrency_levels": list(levels),
            "seed": seed,
            "temperature": 0.0,
            "max_tokens": max_tokens,
        },
        servers=servers,
        groups=tuple(groups),
        summary_head=head,
        summary_rows=rows,
        verdict="; ".join(verdicts),
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        notes=(
            f"TARr@{runs}: 1 when all {runs} identical requests gave the same completion, "
            "else 0 (Atil et al. 2024, over one request here). First divergence: the first "
            "character where the completions differ.",
            BATCH_INVARIANT_SETTINGS,
        ),
        charts=(chart,),
    )


def run_seed_honored(
    *,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    prompt: str | None = None,
    runs: int = SEED_HONORED_RUNS,
    seed: int = COOKBOOK_SEED,
    temperature: float = SEED_HONORED_TEMPERATURE,
    max_tokens: int = SEED_HONORED_MAX_TOKENS,
    server: dict[str, Any] | None = None,
    progress: PresetProgress | None = None,
    timeout: float = 120.0,
) -> PresetResult:
    """Does the backend apply the seed? ``seed`` ``runs`` times (must match),
    then ``seed + 1`` ``runs`` times (should differ), at ``temperature``.

    Verdict: *honoured* (each seed reproduces, the two differ); *ignored*
    (the two seeds give the same output, or no seed reproduces at all: the
    output does not depend on the seed); *unstable* (one seed reproduces,
    the other does not).
    """
    _check(runs)
    messages = _messages(prompt)
    seeds = (seed, seed + 1)
    counter = _Counter(progress, len(seeds) * runs)
    started_at, t0 = time.time(), time.monotonic()
    groups = []
    for s in seeds:
        chat_model = plain_model(
            model=model, base_url=base_url, api_key=api_key, seed=s,
            temperature=temperature, max_tokens=max_tokens, timeout=timeout,
        )  # fmt: skip
        label = f"seed {s}"
        outputs = run_arm(
            chat_model, arm=label, prompt=messages, runs=runs, seed=s,
            progress=counter.group(label),
        )  # fmt: skip
        groups.append(
            Group.compute(
                section="", label=label, seed=s, temperature=temperature, concurrency=1,
                runs=outputs, expect_identical=True,
            )
        )  # fmt: skip
    a, b = groups
    status = seed_verdict(a.texts, b.texts)
    same = "give the same output" if set(a.texts) & set(b.texts) else "differ"
    verdict = (
        f"seed {status}: seed {a.seed}: {a.identical_text()}; seed {b.seed}: "
        f"{b.identical_text()}; the two seeds {same} (temperature {temperature:g})"
    )
    rows = tuple(
        (g.label, f"{g.distinct}/{runs}", f"{g.exact_match_rate:.0%}", _div(g),
         ", ".join(str(f) for f in g.fingerprints))
        for g in groups
    )  # fmt: skip
    chart = Chart(
        "Runs identical to the most common answer, per seed",
        "higher is better: 100% = the seed reproduces its answer",
        tuple(
            _html.Bar(g.label, g.exact_match_rate, f"{g.exact_match_rate:.0%}", i)
            for i, g in enumerate(groups)
        ),
    )
    return PresetResult(
        preset="seed-honored",
        model=model,
        base_url=redact_optional_url(base_url),
        messages=messages,
        settings={
            "runs_per_seed": runs,
            "seeds": list(seeds),
            "temperature": temperature,
            "max_tokens": max_tokens,
        },
        servers={"": dict(server or {})},
        groups=(a, b),
        summary_head=(
            "",
            "distinct",
            "most common share",
            "first divergence (char)",
            "fingerprints",
        ),
        summary_rows=rows,
        verdict=verdict,
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        notes=(
            "honoured: each seed reproduces and the two seeds differ; ignored: the output "
            "does not depend on the seed (the two seeds agree, or no seed reproduces); "
            "unstable: one seed reproduces and the other does not.",
        ),
        charts=(chart,),
    )


def seed_verdict(first: Sequence[str], second: Sequence[str]) -> str:
    """``"honoured"``, ``"ignored"`` or ``"unstable"`` from two seeds' outputs."""
    first_same, second_same = len(set(first)) == 1, len(set(second)) == 1
    if first_same and second_same:
        return "honoured" if first[0] != second[0] else "ignored"
    if not first_same and not second_same:
        return "ignored"
    return "unstable"


def describe_local_server(server: LocalServer) -> dict[str, Any]:
    """The settings of a running `LocalServer`, for a report: what ``/props``
    says and the flags no endpoint exposes."""
    props = server.props()
    return {
        "kind": "local llama-server",
        "build_info": props.get("build_info"),
        "total_slots": props.get("total_slots"),
        "cache_prompt": server.cache_prompt,
        "flash_attn": server.flash_attn,
        "cache_type_k": server.cache_type_k,
        "cache_type_v": server.cache_type_v,
        "kv_unified": server.kv_unified,
        "threads": server.threads,
        "startup_s": None if server.startup_seconds is None else round(server.startup_seconds, 2),
    }
