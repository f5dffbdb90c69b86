"""``seedlock probe``: is this model reproducible with a seed? Measure it.

Sends one prompt N times without a seed and N times with one (same
temperature and max_tokens) and compares the answers, their
``system_fingerprint`` and token counts, as in OpenAI's cookbook.

Presets run the experiments people cite (docs/probe.md):
  --preset cookbook          the cookbook's exact protocol (5 runs, 200 tokens;
                             temperature 0.7 without seed vs seed 123 at 0), with
                             the cookbook's own figures beside ours
  --preset batch-invariance  16 identical requests at temperature 0, sent with
                             concurrency 1, 4 and 16; with the embedded server,
                             llama-server's defaults and -np 1 --no-cache-prompt
  --preset seed-honored      the same seed twice, then another seed, at
                             temperature 1: honoured / ignored / unstable

Backend, first match wins:
  --base-url URL / OPENAI_BASE_URL   any OpenAI-compatible endpoint
  AZURE_OPENAI_ENDPOINT              Azure OpenAI (deployment: --model or
                                     AZURE_OPENAI_DEPLOYMENT)
  OPENAI_API_KEY                     OpenAI itself
  (none of these) or --local         the embedded llama-server with SmolLM2,
                                     started for the probe and stopped after

Exit codes: 0 ok; 3 the seeded arm's exact-match rate is below --fail-under;
4 the backend cannot be reached or started; 1 any other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_seedlock._errors import BackendUnavailableError, ProbeError, SeedLockError
from langchain_seedlock._events import configure_logging
from langchain_seedlock._redact import redact_optional_url, redact_url
from langchain_seedlock.cli import (
    EXIT_BACKEND,
    EXIT_ERROR,
    EXIT_NOT_REPRODUCED,
    EXIT_OK,
    float_between,
    int_at_least,
    prompt_text,
    seed,
)
from langchain_seedlock.cli._serve_cmd import add_server_arguments, server_kwargs

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.language_models import BaseChatModel

    from langchain_seedlock.probe import PresetResult, ProbeResult


DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--base-url``, ``--model``, ``--local`` (shared with ``seedlock verify``)."""
    backend = parser.add_argument_group("backend")
    backend.add_argument("--base-url", default=None, help="OpenAI-compatible base URL (.../v1)")
    backend.add_argument("--model", default=None, help="model name (Azure: deployment name)")
    backend.add_argument(
        "--local", action="store_true",
        help="use the embedded llama-server even if OpenAI/Azure settings are present",
    )  # fmt: skip


# Options each preset takes (None: the default probe); any other experiment
# option given with a preset is a usage error, not silently ignored.
PRESET_OPTIONS: dict[str | None, frozenset[str]] = {
    None: frozenset(
        {"prompt", "runs", "seed", "temperature", "max_tokens", "concurrency", "embeddings_model",
         "store"}
    ),
    "cookbook": frozenset(
        {"runs", "seed", "max_tokens", "concurrency", "embeddings_model", "store"}
    ),
    "batch-invariance": frozenset({"prompt", "runs", "seed", "max_tokens", "levels"}),
    "seed-honored": frozenset({"prompt", "runs", "seed", "temperature", "max_tokens"}),
}  # fmt: skip
EXPERIMENT_OPTIONS = frozenset().union(*PRESET_OPTIONS.values())


def levels(text: str) -> tuple[int, ...]:
    """An argparse ``type`` for ``1,4,16``: concurrency levels >= 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid levels {text!r}: integers separated by commas, e.g. 1,4,16"
        ) from None
    if any(v < 1 or v > 1024 for v in values):
        raise argparse.ArgumentTypeError(f"invalid levels {text!r}: each must be 1..1024")
    return values


def add_parser(subparsers: Any) -> None:
    from langchain_seedlock.probe._presets import PRESETS
    from langchain_seedlock.probe._runner import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT

    parser = subparsers.add_parser(
        "probe",
        help="measure how reproducible a model is with and without a seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_backend_arguments(parser)
    exp = parser.add_argument_group(
        "experiment", "defaults are the default probe's; a preset has its own (see above)"
    )
    exp.add_argument(
        "--preset", choices=PRESETS, default=None,
        help="run a published experiment instead of the default probe",
    )  # fmt: skip
    exp.add_argument(
        "--prompt", default=None, type=prompt_text,
        help=f"the (user) prompt sent in every run (default: {DEFAULT_PROMPT!r}; "
        "presets: the cookbook's)",
    )  # fmt: skip
    exp.add_argument(
        "--runs", type=int_at_least(1), default=None,
        help="runs per arm / concurrency level / seed (default: 5; batch-invariance 16; "
        "seed-honored 2)",
    )  # fmt: skip
    exp.add_argument("--seed", type=seed, default=None, help="the seed (default: 123)")
    exp.add_argument(
        "--temperature", type=float_between(0.0, 2.0), default=None,
        help="both arms (default: 0.7; seed-honored 1.0)",
    )  # fmt: skip
    exp.add_argument(
        "--max-tokens", type=int_at_least(1), default=None,
        help=f"(default: {DEFAULT_MAX_TOKENS}; cookbook 200; batch-invariance 80; "
        "seed-honored 64)",
    )  # fmt: skip
    exp.add_argument(
        "--concurrency", type=int_at_least(1), default=None,
        help="requests in flight per arm (default: 1, sequential)",
    )  # fmt: skip
    exp.add_argument(
        "--levels", type=levels, default=None, metavar="N,N,...",
        help="batch-invariance: the concurrency levels (default: 1,4,16)",
    )  # fmt: skip
    exp.add_argument(
        "--embeddings-model", default=os.environ.get("SEEDLOCK_EMBEDDINGS_MODEL"), metavar="NAME",
        help="measure pairwise distance as the cosine distance of embeddings from this model "
        "on the same OpenAI-compatible endpoint, as OpenAI's cookbook does "
        "(default: $SEEDLOCK_EMBEDDINGS_MODEL, else a text distance)",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json", dest="json_file", metavar="FILE", help="write the result as JSON (- : stdout)"
    )
    out.add_argument(
        "--html", dest="html_file", metavar="FILE",
        help="write a self-contained HTML report (charts, full answers)",
    )  # fmt: skip
    out.add_argument("--full", action="store_true", help="print the answers whole, not excerpts")
    out.add_argument(
        "--fail-under", type=float_between(0.0, 1.0), default=None, metavar="RATE",
        help="exit 3 when the seeded arm's exact-match rate is below RATE (0..1); "
        "presets: every group that should be identical",
    )  # fmt: skip
    out.add_argument(
        "--store", default=None, metavar="URL",
        help="baseline store for the seeded arm: sqlite:///f.db, postgresql://..., memory:// "
        "(default: $SEEDLOCK_STORE or SQLite in the user state directory; "
        "batch-invariance and seed-honored write no baselines)",
    )  # fmt: skip
    out.add_argument(
        "-q", "--quiet", action="store_true",
        help="no report, no progress: only the verdict line and the files written",
    )  # fmt: skip
    add_server_arguments(parser)
    parser.set_defaults(run=run, parser=parser)


def _fail(message: str, code: int) -> int:
    # One line, no traceback: this is what a CI log shows. A server that
    # failed to start appends its log tail: keep the last line, the error.
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = lines[0] if lines else "unknown error"
    if len(lines) > 1:
        text = f"{text} {lines[-1]}"
    print(f"seedlock probe: error: {text}", file=sys.stderr)
    return code


def _azure_models(
    args: argparse.Namespace, endpoint: str
) -> tuple[BaseChatModel, BaseChatModel, str]:
    from langchain_openai import AzureChatOpenAI

    from langchain_seedlock._lock import SeedLock

    deployment = args.model or os.environ.get("AZURE_OPENAI_DEPLOYMENT")
    if not deployment:
        raise ProbeError("Azure needs a deployment: --model NAME or AZURE_OPENAI_DEPLOYMENT")
    common: dict[str, Any] = {
        "azure_endpoint": endpoint,
        "azure_deployment": deployment,
        "api_version": os.environ.get("OPENAI_API_VERSION")
        or os.environ.get("AZURE_OPENAI_API_VERSION")
        or "2024-10-21",
        "max_retries": 0,
    }
    # `max_tokens` is a pydantic alias, which the type checker does not see.
    sampling: dict[str, Any] = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    unseeded = AzureChatOpenAI(**common, **sampling)
    lock = SeedLock(args.seed, temperature=args.temperature, max_tokens=args.max_tokens)
    from langchain_seedlock._chat_models import LockedAzureChatOpenAI

    seeded = LockedAzureChatOpenAI(**common, lock=lock)
    return unseeded, seeded, deployment


class _Progress:
    """Progress on stderr: a rich bar in a terminal, else one line per phase.

    Called as ``progress(phase, done, total)`` (presets) and adapted for the
    default probe's ``progress(arm, done_in_arm, runs)`` by `arm_progress`.
    """

    def __init__(self, stack: ExitStack, *, interactive: bool) -> None:
        self._phase: str | None = None
        self._bar: Any = None
        if interactive:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = stack.enter_context(Progress(console=Console(stderr=True), transient=True))
            self._task = self._bar.add_task("starting", total=None)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, description=phase)
        elif phase != self._phase:
            print(f"seedlock probe: {phase} (call {done} of {total})", file=sys.stderr, flush=True)
        self._phase = phase

    def arm_progress(self, runs: int) -> Callable[[str, int, int], None]:
        def report(arm: str, done: int, _runs: int) -> None:
            offset = 0 if arm == "unseeded" else runs
            self(f"{arm} arm", offset + done, 2 * runs)

        return report


def wants_local(args: argparse.Namespace) -> bool:
    """True when the embedded server is the backend (``--local``, or nothing else set)."""
    has_remote = (
        args.base_url
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("AZURE_OPENAI_ENDPOINT")
        or os.environ.get("OPENAI_API_KEY")
    )
    return bool(args.local or not has_remote)


def open_backend(
    args: argparse.Namespace, stack: ExitStack, *, announce: bool = False
) -> dict[str, Any]:
    """Pick the backend from the options and environment (see the module docstring).

    Returns `run_probe` keyword arguments (``model``, ``base_url``,
    ``api_key`` or ``chat_models``) plus ``backend`` (facts for the report).
    An embedded server is entered into ``stack``: it stops when the stack closes.
    """
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    azure_endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
    if wants_local(args):
        from langchain_seedlock.local import MODEL_NAME, LocalServer
        from langchain_seedlock.probe._presets import describe_local_server

        if announce:
            print("seedlock: starting llama-server…", file=sys.stderr, flush=True)
        server = stack.enter_context(LocalServer(**server_kwargs(args)))
        backend = describe_local_server(server)
        return {"model": args.model or MODEL_NAME, "base_url": server.base_url, "backend": backend}
    if base_url:
        return {
            "model": args.model or DEFAULT_OPENAI_MODEL,
            "base_url": base_url,
            "api_key": os.environ.get("OPENAI_API_KEY"),
            "backend": {"kind": "openai-compatible", "base_url": redact_optional_url(base_url)},
        }
    if azure_endpoint:
        unseeded, seeded, deployment = _azure_models(args, azure_endpoint)
        return {
            "model": deployment,
            "chat_models": (unseeded, seeded),
            "backend": {"kind": "azure-openai"},
        }
    return {"model": args.model or DEFAULT_OPENAI_MODEL, "backend": {"kind": "openai"}}


def _embeddings(name: str, probe_kwargs: dict[str, Any]) -> Any:
    """OpenAI-compatible embeddings on the probe's endpoint."""
    if str(probe_kwargs.get("backend", {}).get("kind")) == "local llama-server":
        raise ValueError(
            "the embedded SmolLM2 server serves no embeddings; drop --embeddings-model "
            "or point --base-url at an endpoint that has that model"
        )
    from langchain_openai import OpenAIEmbeddings
    from pydantic import SecretStr

    key = probe_kwargs.get("api_key") or os.environ.get("OPENAI_API_KEY") or "none"
    return OpenAIEmbeddings(
        model=name,
        base_url=probe_kwargs.get("base_url"),
        api_key=SecretStr(str(key)),
        check_embedding_ctx_length=False,
    )


def configure_cli_logging() -> None:
    """The CLI configures structlog for itself (the library never does): drift
    and fingerprint events go to stderr, the per-call debug line does not."""
    configure_logging(json=not sys.stderr.isatty(), level="warning")


def _defaults(preset: str | None) -> dict[str, Any]:
    """Each preset's defaults, from the constants that define it."""
    from langchain_seedlock.probe import _presets as p
    from langchain_seedlock.probe._runner import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT

    seed_default = p.COOKBOOK_SEED
    defaults: dict[str | None, dict[str, Any]] = {
        None: {"prompt": DEFAULT_PROMPT, "runs": 5, "seed": seed_default, "temperature": 0.7,
               "max_tokens": DEFAULT_MAX_TOKENS, "concurrency": 1},
        "cookbook": {"runs": p.COOKBOOK_RUNS, "seed": seed_default,
                     "max_tokens": p.COOKBOOK_MAX_TOKENS, "concurrency": 1},
        "batch-invariance": {"runs": p.BATCH_RUNS, "seed": seed_default,
                             "max_tokens": p.BATCH_MAX_TOKENS, "levels": p.BATCH_LEVELS},
        "seed-honored": {"runs": p.SEED_HONORED_RUNS, "seed": seed_default,
                         "temperature": p.SEED_HONORED_TEMPERATURE,
                         "max_tokens": p.SEED_HONORED_MAX_TOKENS},
    }  # fmt: skip
    return defaults[preset]


def resolve_options(args: argparse.Namespace) -> None:
    """Refuse experiment options the preset does not take; fill in its defaults."""
    parser: argparse.ArgumentParser = args.parser
    allowed = PRESET_OPTIONS[args.preset]
    given = sorted(
        name for name in EXPERIMENT_OPTIONS - allowed
        if getattr(args, name) != parser.get_default(name)
    )  # fmt: skip
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(
            f"{flags}: not an option of --preset {args.preset} "
            f"(it takes: {', '.join(sorted('--' + n.replace('_', '-') for n in allowed))})"
        )
    for name, value in _defaults(args.preset).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run(args: argparse.Namespace) -> int:
    from langchain_seedlock._store import default_store_url
    from langchain_seedlock.probe import run_probe

    resolve_options(args)
    configure_cli_logging()
    interactive = sys.stderr.isatty() and not args.quiet
    with ExitStack() as stack:
        try:
            progress = None if args.quiet else _Progress(stack, interactive=interactive)
            if args.preset is not None:
                result: ProbeResult | PresetResult = _run_preset(args, stack, progress, interactive)
            else:
                probe_kwargs = open_backend(args, stack, announce=interactive)
                if args.embeddings_model:
                    probe_kwargs["embeddings"] = _embeddings(args.embeddings_model, probe_kwargs)
                args.store = args.store or default_store_url()
                result = run_probe(
                    prompt=args.prompt,
                    runs=args.runs,
                    seed=args.seed,
                    temperature=args.temperature,
                    max_tokens=args.max_tokens,
                    concurrency=args.concurrency,
                    store=args.store,
                    progress=progress.arm_progress(args.runs) if progress else None,
                    **probe_kwargs,
                )
        except BackendUnavailableError as exc:
            return _fail(str(exc), EXIT_BACKEND)
        except (SeedLockError, OSError, ValueError) as exc:
            return _fail(f"{type(exc).__name__}: {exc}", EXIT_ERROR)
        except KeyboardInterrupt:
            # The ExitStack has stopped the embedded server by now.
            print("seedlock probe: interrupted", file=sys.stderr)
            return 130
    return _report(result, args)


def _run_preset(
    args: argparse.Namespace, stack: ExitStack, progress: _Progress | None, interactive: bool
) -> PresetResult:
    from langchain_seedlock._store import default_store_url
    from langchain_seedlock.probe import run_batch_invariance, run_cookbook, run_seed_honored

    if os.environ.get("AZURE_OPENAI_ENDPOINT") and not (
        args.local or args.base_url or os.environ.get("OPENAI_BASE_URL")
    ):
        raise ProbeError("presets run on OpenAI-compatible endpoints: give --base-url or --local")
    if args.preset == "batch-invariance" and wants_local(args):
        # The preset starts the two server setups it compares, one after the other.
        from langchain_seedlock.local import MODEL_NAME
        from langchain_seedlock.probe._presets import BATCH_LOCAL_SETUPS

        common = server_kwargs(args)
        for name in ("slots", "cache_prompt", "kv_unified"):
            if common.pop(name) != args.parser.get_default(name):
                args.parser.error(
                    f"--{name.replace('_', '-')}: --preset batch-invariance starts its own two "
                    "setups; to measure one server, start it (seedlock serve) and give --base-url"
                )
        setups = [(label, {**common, **setup}) for label, setup in BATCH_LOCAL_SETUPS]
        if interactive:
            print("seedlock: starting llama-server (two setups, in turn)…", file=sys.stderr)
        return run_batch_invariance(
            model=args.model or MODEL_NAME, prompt=args.prompt, runs=args.runs,
            levels=args.levels, seed=args.seed, max_tokens=args.max_tokens,
            local_setups=setups, progress=progress,
        )  # fmt: skip
    kwargs = open_backend(args, stack, announce=interactive)
    target = {
        "model": kwargs["model"],
        "base_url": kwargs.get("base_url"),
        "api_key": kwargs.get("api_key"),
        "server": kwargs["backend"],
        "progress": progress,
    }
    if args.preset == "cookbook":
        args.store = args.store or default_store_url()
        embeddings = _embeddings(args.embeddings_model, kwargs) if args.embeddings_model else None
        return run_cookbook(
            **target, runs=args.runs, seed=args.seed, max_tokens=args.max_tokens,
            concurrency=args.concurrency, store=args.store, embeddings=embeddings,
        )  # fmt: skip
    if args.preset == "batch-invariance":
        return run_batch_invariance(
            **target, prompt=args.prompt, runs=args.runs, levels=args.levels, seed=args.seed,
            max_tokens=args.max_tokens,
        )  # fmt: skip
    return run_seed_honored(
        **target, prompt=args.prompt, runs=args.runs, seed=args.seed,
        temperature=args.temperature, max_tokens=args.max_tokens,
    )  # fmt: skip


def _report(result: ProbeResult | PresetResult, args: argparse.Namespace) -> int:
    from langchain_seedlock.probe import ProbeResult

    written = []
    try:
        if args.json_file:
            text = result.to_json()
            if args.json_file == "-":
                print(text)
            else:
                Path(args.json_file).write_text(text + "\n", encoding="utf-8")
                written.append(f"{args.json_file} (JSON)")
        if args.html_file:
            Path(args.html_file).write_text(result.to_html(), encoding="utf-8")
            written.append(f"{args.html_file} (HTML)")
    except OSError as exc:
        return _fail(f"cannot write the report: {exc}", EXIT_ERROR)
    # With --json -, stdout holds the JSON only: the rest goes to stderr.
    out = sys.stderr if args.json_file == "-" else sys.stdout
    if not args.quiet and args.json_file != "-":
        if isinstance(result, ProbeResult) and out.isatty():
            from rich.console import Console

            Console().print(result.rich_renderable(full=args.full))
        else:
            print(result.to_text(full=args.full), file=out)
        print(file=out)
    store = (
        f"baselines in {redact_url(args.store)}"
        if args.store
        else "no baselines (this preset writes none)"
    )
    print(f"files: {', '.join(written) or 'none written'}; {store}", file=out)
    print(result.verdict, file=out, flush=True)
    if args.fail_under is not None and not result.passed(args.fail_under):
        print(
            f"seedlock probe: exact-match rate below --fail-under {args.fail_under:.0%}",
            file=sys.stderr,
        )
        return EXIT_NOT_REPRODUCED
    return EXIT_OK
