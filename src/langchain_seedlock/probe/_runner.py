"""The reproducibility probe: one prompt N times without a seed, N times with one.

This is OpenAI's cookbook experiment ("reproducible outputs with the seed
parameter") as a tool: both arms share the prompt, temperature and
max_tokens; only the seed differs. Per run it keeps the response, the
``system_fingerprint`` and the token counts; per arm it computes:

- **exact-match rate**: the fraction of runs whose output is identical to the
  arm's most common output (1.0 = every run gave the same text; 1/N = all
  different);
- **distinct outputs**: the number of different texts;
- **mean pairwise distance**: the mean over every pair of runs of a distance
  in [0, 1]: ``1 - difflib.SequenceMatcher.ratio()`` by default, the cosine
  distance of the embeddings when an ``Embeddings`` model is given;
- **first divergence**: the first character index where the outputs stop
  being identical (the length of their common prefix), None when all agree;
- **fingerprints seen**.

The seeded arm goes through `LockedChatOpenAI` and `SeedLockCallbackHandler`,
so a probe also writes baselines and drift events to the store. The unseeded
arm uses a plain ``ChatOpenAI`` without a lock (a lock would refuse it).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from langchain_seedlock._errors import BackendUnavailableError, ProbeError, is_connection_error
from langchain_seedlock._redact import redact_optional_url
from langchain_seedlock._report import _html
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
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from rich.console import RenderableType

    from langchain_seedlock._store._base import BaselineStore

ArmName = Literal["unseeded", "seeded"]
ARMS: tuple[ArmName, ArmName] = ("unseeded", "seeded")

ProgressCallback = Callable[[str, int, int], None]
"""``progress(arm, done_in_arm, runs_per_arm)``, called after every run."""

DEFAULT_PROMPT = "Write a short story about a robot who learns to paint, in three sentences."
DEFAULT_MAX_TOKENS = 64
EXCERPT_CHARS = 60


# -- results -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProbeRun:
    """One call: the cookbook's table row."""

    arm: str
    index: int
    text: str
    system_fingerprint: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    seed: int | None
    latency_s: float
    request_hash: str | None = None
    output_hash: str | None = None

    @property
    def excerpt(self) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One arm's runs and statistics."""

    name: str
    seed: int | None
    runs: tuple[ProbeRun, ...]
    exact_match_rate: float
    distinct_outputs: int
    mean_pairwise_distance: float
    distance_kind: str
    first_divergence: int | None
    fingerprints: tuple[str | None, ...]
    tokens_per_second: float | None

    @property
    def outputs(self) -> list[str]:
        return [r.text for r in self.runs]

    @classmethod
    def compute(
        cls,
        name: str,
        seed: int | None,
        runs: Sequence[ProbeRun],
        *,
        embeddings: Embeddings | None = None,
    ) -> ArmStats:
        texts = [r.text for r in runs]
        if embeddings is not None:
            vectors = embeddings.embed_documents(texts)
            mean = mean_pairwise(vectors, cosine_distance)
            kind = "cosine"
        else:
            mean = mean_pairwise(texts, text_distance)
            kind = "text"
        fingerprints = tuple(dict.fromkeys(r.system_fingerprint for r in runs))
        tokens = sum(r.completion_tokens or 0 for r in runs)
        seconds = sum(r.latency_s for r in runs)
        return cls(
            name=name,
            seed=seed,
            runs=tuple(runs),
            exact_match_rate=exact_match_rate(texts),
            distinct_outputs=len(set(texts)),
            mean_pairwise_distance=mean,
            distance_kind=kind,
            first_divergence=first_divergence(texts),
            fingerprints=fingerprints,
            # Per-request throughput (sum of latencies): comparable whatever
            # the concurrency.
            tokens_per_second=tokens / seconds if seconds > 0 and tokens else None,
        )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The probe's outcome: settings, the two arms, and renderings.

    ``to_dict()`` is the JSON document written by ``seedlock probe --json``;
    ``to_html()`` the self-contained report of ``--html``; in a notebook the
    result renders itself (``_repr_html_``), and ``rich.print(result)`` draws
    the terminal tables.
    """

    model: str
    base_url: str | None
    prompt: str
    runs: int
    seed: int
    temperature: float
    max_tokens: int
    concurrency: int
    unseeded: ArmStats
    seeded: ArmStats
    started_at: float
    duration_s: float
    backend: dict[str, Any] = field(default_factory=dict)

    @property
    def arms(self) -> tuple[ArmStats, ArmStats]:
        return (self.unseeded, self.seeded)

    def passed(self, fail_under: float) -> bool:
        """True when the seeded arm's exact-match rate is at least ``fail_under``."""
        return self.seeded.exact_match_rate >= fail_under

    # -- JSON ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (schema: ``seedlock.probe/1``)."""

        def arm(stats: ArmStats) -> dict[str, Any]:
            data = asdict(stats)
            data["runs"] = [asdict(r) for r in stats.runs]
            data["fingerprints"] = list(stats.fingerprints)
            return data

        return {
            "schema": "seedlock.probe/1",
            "model": self.model,
            "base_url": redact_optional_url(self.base_url),
            "prompt": self.prompt,
            "settings": {
                "runs": self.runs,
                "seed": self.seed,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "concurrency": self.concurrency,
            },
            "backend": self.backend,
            "started_at": self.started_at,
            "started_at_iso": self.started_iso,
            "duration_s": self.duration_s,
            "arms": {"unseeded": arm(self.unseeded), "seeded": arm(self.seeded)},
            "verdict": self.verdict,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @property
    def started_iso(self) -> str:
        return datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds")

    @property
    def verdict(self) -> str:
        """The one-line conclusion, e.g. "seed honoured: 5/5 identical with seed
        123; without seed 5/5 distinct"."""
        s, u, n = self.seeded, self.unseeded, self.runs
        unseeded = f"without seed {u.distinct_outputs}/{n} distinct"
        if s.distinct_outputs == 1:
            return f"seed honoured: {n}/{n} identical with seed {s.seed}; {unseeded}"
        return (
            f"seed not reproducing: {s.distinct_outputs} distinct of {n} with seed {s.seed} "
            f"(exact-match {s.exact_match_rate:.0%}); {unseeded}"
        )

    # -- HTML ------------------------------------------------------------------
    def to_svg(self) -> str:
        """A bar chart (inline SVG) of the two arms' exact-match rates."""
        return _html.bar_chart(
            "Exact-match rate per arm",
            "higher is better: 100% = every run gave the same answer",
            [
                _html.Bar(f"{a.name} ({len(a.runs)} runs)", a.exact_match_rate,
                          f"{a.exact_match_rate:.0%} ({a.distinct_outputs} distinct)", i)
                for i, a in enumerate(self.arms)
            ],
        )  # fmt: skip

    def _distance_svg(self) -> str:
        return _html.bar_chart(
            f"Mean pairwise distance per arm ({self.seeded.distance_kind})",
            "lower is better: 0 = identical answers",
            [
                _html.Bar(a.name, min(1.0, a.mean_pairwise_distance),
                          f"{a.mean_pairwise_distance:.3f}", i)
                for i, a in enumerate(self.arms)
            ],
        )  # fmt: skip

    def _summary_rows(self) -> list[tuple[str, str, str]]:
        def fmt_fp(stats: ArmStats) -> str:
            return ", ".join(str(f) for f in stats.fingerprints)

        def fmt_div(stats: ArmStats) -> str:
            return "—" if stats.first_divergence is None else str(stats.first_divergence)

        def fmt_tps(stats: ArmStats) -> str:
            t = stats.tokens_per_second
            return "—" if t is None else f"{t:.1f}"

        u, s = self.unseeded, self.seeded
        return [
            ("seed", "none", str(s.seed)),
            ("exact-match rate", f"{u.exact_match_rate:.0%}", f"{s.exact_match_rate:.0%}"),
            (
                "distinct outputs",
                f"{u.distinct_outputs}/{len(u.runs)}",
                f"{s.distinct_outputs}/{len(s.runs)}",
            ),
            (
                f"mean pairwise distance ({s.distance_kind})",
                f"{u.mean_pairwise_distance:.3f}",
                f"{s.mean_pairwise_distance:.3f}",
            ),
            ("first divergence (char)", fmt_div(u), fmt_div(s)),
            ("fingerprints", fmt_fp(u), fmt_fp(s)),
            ("tokens/s per request", fmt_tps(u), fmt_tps(s)),
        ]

    def _settings_line(self) -> str:
        return (
            f"{self.runs} runs per arm · temperature {self.temperature:g} · "
            f"max_tokens {self.max_tokens} · concurrency {self.concurrency}"
        )

    def _server_line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.backend.items() if v is not None) or "unknown"

    def _html_body(self) -> str:
        esc = html.escape
        runs = [
            (
                r.arm,
                str(r.index + 1),
                _html.Raw(f"<pre class='answer'>{esc(r.text)}</pre>"),
                _html.Raw(f"<code>{esc(str(r.system_fingerprint))}</code>"),
                "" if r.prompt_tokens is None else str(r.prompt_tokens),
                "" if r.completion_tokens is None else str(r.completion_tokens),
            )
            for stats in self.arms
            for r in stats.runs
        ]
        return (
            '<div class="seedlock-probe">'
            f"<h2>seedlock probe — {esc(self.model)}</h2>"
            f'<p class="verdict">{esc(self.verdict)}</p>'
            f"<p>Prompt: <q>{esc(self.prompt)}</q><br>{esc(self._settings_line())} · "
            f"started {esc(self.started_iso)} · {self.duration_s:.1f} s<br>"
            f"Server: {esc(self._server_line())}</p>"
            f"<figure>{self.to_svg()}</figure><figure>{self._distance_svg()}</figure>"
            + _html.table(("", "unseeded", "seeded"), self._summary_rows())
            + _html.table(
                (
                    "arm",
                    "#",
                    "response",
                    "system_fingerprint",
                    "prompt tokens",
                    "completion tokens",
                ),
                runs,
            )
            + "<p><small>Exact-match rate: fraction of runs identical to the arm's most "
            "common output. First divergence: first character index where the outputs "
            "differ.</small></p></div>"
        )

    def to_html(self) -> str:
        """A self-contained HTML page (inline CSS and SVG, no external assets)."""
        return _html.page(
            f"seedlock probe — {self.model}", self._html_body(), generated_at=self.started_at
        )

    def _repr_html_(self) -> str:
        return self._html_body()

    # -- rich ----------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        return self.rich_renderable()

    def rich_renderable(self, *, full: bool = False) -> RenderableType:
        """The terminal tables; answers are excerpts unless ``full``."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header = Text(
            f"prompt: {self.prompt}\n{self._settings_line()} · started {self.started_iso} · "
            f"{self.duration_s:.1f} s\nserver: {self._server_line()}"
        )
        runs = Table(title=f"seedlock probe — {self.model}", show_lines=full)
        for col in ("arm", "#", "response", "system_fingerprint", "prompt tok", "compl. tok"):
            if col == "response":  # the only column that may wrap; it takes the room left
                runs.add_column(col, ratio=1, min_width=24, overflow="fold")
            else:
                runs.add_column(col, no_wrap=True)
        for stats in self.arms:
            for r in stats.runs:
                runs.add_row(
                    r.arm,
                    str(r.index + 1),
                    r.text if full else r.excerpt,
                    str(r.system_fingerprint),
                    "" if r.prompt_tokens is None else str(r.prompt_tokens),
                    "" if r.completion_tokens is None else str(r.completion_tokens),
                )
            if stats is self.unseeded:
                runs.add_section()
        summary = Table(title="per arm")
        summary.add_column("")
        summary.add_column("unseeded")
        summary.add_column("seeded")
        for row in self._summary_rows():
            summary.add_row(*row)
        return Group(header, runs, summary)

    def to_text(self, *, full: bool = False) -> str:
        """Plain text (for logs and non-terminal output); answers are
        excerpts unless ``full``."""
        lines = [
            f"seedlock probe: model={self.model} runs={self.runs} seed={self.seed} "
            f"temperature={self.temperature:g} max_tokens={self.max_tokens} "
            f"concurrency={self.concurrency}",
            f"started {self.started_iso} · {self.duration_s:.1f} s",
            f"server: {self._server_line()}",
            f"prompt: {self.prompt}",
        ]
        for stats in self.arms:
            for r in stats.runs:
                lines.append(
                    f"  {r.arm:<8} #{r.index + 1} fp={r.system_fingerprint} "
                    f"prompt={r.prompt_tokens} completion={r.completion_tokens} "
                    f"{r.text if full else r.excerpt}"
                )
        width = max(len(k) for k, _, _ in self._summary_rows())
        lines.append(f"  {'':<{width}}  {'unseeded':<12} seeded")
        lines.extend(f"  {k:<{width}}  {u:<12} {s}" for k, u, s in self._summary_rows())
        return "\n".join(lines)


# -- running ---------------------------------------------------------------------
def _usage(message: BaseMessage) -> tuple[int | None, int | None]:
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return usage.get("input_tokens"), usage.get("output_tokens")
    token_usage = message.response_metadata.get("token_usage") or {}
    return token_usage.get("prompt_tokens"), token_usage.get("completion_tokens")


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        p if isinstance(p, str) else str(p.get("text", "")) for p in content if p is not None
    )


def plain_model(
    *,
    model: str,
    base_url: str | None,
    api_key: str | None,
    temperature: float,
    max_tokens: int,
    timeout: float,
    seed: int | None = None,
) -> BaseChatModel:
    """A plain ``ChatOpenAI`` (no lock, no retries), with ``seed`` if given."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key or "sk-no-key",  # type: ignore[arg-type]  # local servers accept anything
        temperature=temperature,
        max_tokens=max_tokens,  # type: ignore[call-arg]  # a pydantic alias
        timeout=timeout,
        max_retries=0,  # a retry would hide the backend being down
        seed=seed,
    )


def build_models(
    *,
    model: str,
    base_url: str | None,
    api_key: str | None,
    seed: int,
    temperature: float,
    max_tokens: int,
    timeout: float,
) -> tuple[BaseChatModel, BaseChatModel]:
    """The unseeded arm's plain model and the seeded arm's locked model."""
    from langchain_seedlock._chat_models import LockedChatOpenAI
    from langchain_seedlock._lock import SeedLock

    unseeded = plain_model(
        model=model, base_url=base_url, api_key=api_key, temperature=temperature,
        max_tokens=max_tokens, timeout=timeout,
    )  # fmt: skip
    lock = SeedLock(seed, temperature=temperature, max_tokens=max_tokens)
    locked = LockedChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key or "sk-no-key",  # type: ignore[arg-type]
        timeout=timeout,
        max_retries=0,
        lock=lock,
    )
    return unseeded, locked


def make_handler(store: BaselineStore | str | None) -> BaseCallbackHandler:
    """The package's callback handler on ``store`` (a store or a URL; None: memory)."""
    from langchain_seedlock._callbacks import SeedLockCallbackHandler

    return SeedLockCallbackHandler(store=store)


def run_arm(
    chat_model: BaseChatModel,
    *,
    arm: str,
    prompt: str | Sequence[tuple[str, str]],
    runs: int,
    seed: int | None,
    concurrency: int = 1,
    callbacks: Sequence[BaseCallbackHandler] = (),
    progress: ProgressCallback | None = None,
) -> list[ProbeRun]:
    """Send ``prompt`` (a text, or ``(role, content)`` messages) ``runs`` times
    to ``chat_model``; results in run order."""
    config: dict[str, Any] = {"callbacks": list(callbacks)} if callbacks else {}
    done = 0

    def one(index: int) -> ProbeRun:
        started = time.monotonic()
        try:
            message = chat_model.invoke(prompt, config=config)  # type: ignore[arg-type]
        except Exception as exc:
            if is_connection_error(exc):
                raise BackendUnavailableError(f"cannot reach the model server: {exc}") from exc
            raise ProbeError(f"{arm} run {index + 1} failed: {type(exc).__name__}: {exc}") from exc
        latency = time.monotonic() - started
        prompt_tokens, completion_tokens = _usage(message)
        meta = message.response_metadata
        return ProbeRun(
            arm=arm,
            index=index,
            text=_text(message),
            system_fingerprint=meta.get("system_fingerprint"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            seed=seed,
            latency_s=latency,
            request_hash=meta.get("seedlock_request_hash"),
            output_hash=meta.get("seedlock_output_hash"),
        )

    results: list[ProbeRun] = []
    if concurrency <= 1:
        for i in range(runs):
            results.append(one(i))
            done += 1
            if progress:
                progress(arm, done, runs)
        return results
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="seedlock-probe") as pool:
        futures = [pool.submit(one, i) for i in range(runs)]
        for fut in futures:
            results.append(fut.result())
            done += 1
            if progress:
                progress(arm, done, runs)
    return results


def run_probe(
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    chat_models: tuple[BaseChatModel, BaseChatModel] | None = None,
    prompt: str = DEFAULT_PROMPT,
    runs: int = 5,
    seed: int = 123,
    temperature: float = 0.7,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = 1,
    store: BaselineStore | str | None = None,
    embeddings: Embeddings | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 120.0,
    backend: dict[str, Any] | None = None,
    handler: BaseCallbackHandler | None = None,
) -> ProbeResult:
    """Run the probe and return its `ProbeResult`.

    Args:
        model: the model name sent to the endpoint.
        base_url: an OpenAI-compatible endpoint (``.../v1``); None uses
            ``OPENAI_BASE_URL`` or OpenAI itself.
        api_key: None uses ``OPENAI_API_KEY``.
        chat_models: instead of ``model``/``base_url``, the two models to call:
            ``(unseeded, seeded)``: a plain model and a locked one (e.g.
            ``LockedAzureChatOpenAI``), built with the same temperature and
            max_tokens.
        prompt, runs, seed, temperature, max_tokens: the experiment.
        concurrency: requests in flight per arm (1: sequential).
        store: the baseline store for the seeded arm (a store or a URL such
            as ``"sqlite:///baselines.db"``); None keeps baselines in memory.
        embeddings: a LangChain ``Embeddings`` for the pairwise distance
            (cosine); None uses a text distance.
        progress: ``progress(arm, done, runs)`` after each run.
        backend: extra facts about the backend for the report (e.g. ``/props``).
        handler: the callback handler of the seeded arm (e.g. a
            `SeedLockCallbackHandler` sharing a monitor); None builds one on
            ``store`` and closes it at the end.

    Raises:
        BackendUnavailableError: the endpoint cannot be reached.
        ProbeError: a call failed otherwise, or the arguments are invalid.
    """
    if runs < 1:
        raise ProbeError(f"runs must be >= 1 (got {runs})")
    if concurrency < 1:
        raise ProbeError(f"concurrency must be >= 1 (got {concurrency})")
    if chat_models is None:
        if model is None:
            raise ProbeError("give a model name (or chat_models=(unseeded, seeded))")
        unseeded_model, seeded_model = build_models(
            model=model,
            base_url=base_url,
            api_key=api_key,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
        )
    else:
        unseeded_model, seeded_model = chat_models
        model = model or str(
            getattr(seeded_model, "model_name", None)
            or getattr(seeded_model, "deployment_name", None)
            or type(seeded_model).__name__
        )
    own_handler = handler is None
    if handler is None:
        handler = make_handler(store)
    started_at = time.time()
    t0 = time.monotonic()
    unseeded_runs = run_arm(
        unseeded_model,
        arm="unseeded",
        prompt=prompt,
        runs=runs,
        seed=None,
        concurrency=concurrency,
        progress=progress,
    )
    seeded_runs = run_arm(
        seeded_model,
        arm="seeded",
        prompt=prompt,
        runs=runs,
        seed=seed,
        concurrency=concurrency,
        callbacks=[handler],
        progress=progress,
    )
    duration = time.monotonic() - t0
    if own_handler:
        # Wait for the baselines to reach the store before returning (the
        # handler's monitor writes on a background thread).
        close = getattr(handler, "close", None)
        if callable(close):
            close()
    return ProbeResult(
        model=model,
        # Shown and written (--json): credentials in the URL never are.
        base_url=redact_optional_url(base_url),
        prompt=prompt,
        runs=runs,
        seed=seed,
        temperature=temperature,
        max_tokens=max_tokens,
        concurrency=concurrency,
        unseeded=ArmStats.compute("unseeded", None, unseeded_runs, embeddings=embeddings),
        seeded=ArmStats.compute("seeded", seed, seeded_runs, embeddings=embeddings),
        started_at=started_at,
        duration_s=duration,
        backend=dict(backend or {}),
    )
