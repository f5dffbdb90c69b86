"""``seedlock probe``: is this model reproducible with a seed? Measure it.

Sends one prompt N times without a seed and N times with one (same
temperature and max_tokens) and compares the answers, their
``system_fingerprint`` and token counts, as in OpenAI's cookbook.

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
    from langchain_core.language_models import BaseChatModel

    from langchain_seedlock.probe._runner import ProbeResult


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


def add_parser(subparsers: Any) -> None:
    from langchain_seedlock.probe._runner import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT

    parser = subparsers.add_parser(
        "probe",
        help="measure how reproducible a model is with and without a seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_backend_arguments(parser)
    exp = parser.add_argument_group("experiment")
    exp.add_argument(
        "--prompt", default=DEFAULT_PROMPT, type=prompt_text, help="the prompt sent in every run"
    )
    exp.add_argument("--runs", type=int_at_least(1), default=5, help="runs per arm (default: 5)")
    exp.add_argument("--seed", type=seed, default=123, help="seed of the seeded arm (default: 123)")
    exp.add_argument(
        "--temperature", type=float_between(0.0, 2.0), default=0.7,
        help="both arms (default: 0.7)",
    )  # fmt: skip
    exp.add_argument(
        "--max-tokens", type=int_at_least(1), default=DEFAULT_MAX_TOKENS,
        help=f"both arms (default: {DEFAULT_MAX_TOKENS})",
    )  # fmt: skip
    exp.add_argument(
        "--concurrency", type=int_at_least(1), default=1,
        help="requests in flight per arm (default: 1, sequential)",
    )  # fmt: skip
    exp.add_argument(
        "--embeddings-model", default=os.environ.get("SEEDLOCK_EMBEDDINGS_MODEL"), metavar="NAME",
        help="measure pairwise distance as the cosine distance of embeddings from this model "
        "on the same OpenAI-compatible endpoint, as OpenAI's cookbook does "
        "(default: $SEEDLOCK_EMBEDDINGS_MODEL, else a text distance)",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--json", dest="json_file", metavar="FILE", help="write the result as JSON")
    out.add_argument("--html", dest="html_file", metavar="FILE", help="write an HTML report")
    out.add_argument(
        "--fail-under", type=float_between(0.0, 1.0), default=None, metavar="RATE",
        help="exit 3 when the seeded arm's exact-match rate is below RATE (0..1)",
    )  # fmt: skip
    out.add_argument(
        "--store", default=None, metavar="URL",
        help="baseline store for the seeded arm: sqlite:///f.db, postgresql://..., memory:// "
        "(default: $SEEDLOCK_STORE or SQLite in the user state directory)",
    )  # fmt: skip
    out.add_argument("-q", "--quiet", action="store_true", help="no table, no progress bar")
    add_server_arguments(parser)
    parser.set_defaults(run=run)


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
    """A rich progress bar over both arms (stderr, terminals only)."""

    def __init__(self, runs: int, stack: ExitStack) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = stack.enter_context(Progress(console=Console(stderr=True), transient=True))
        self._runs = runs
        self._task = self._progress.add_task("unseeded arm", total=2 * runs)

    def __call__(self, arm: str, done: int, runs: int) -> None:
        offset = 0 if arm == "unseeded" else runs
        self._progress.update(self._task, completed=offset + done, description=f"{arm} arm")


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
    has_remote = base_url or azure_endpoint or os.environ.get("OPENAI_API_KEY")
    if args.local or not has_remote:
        from langchain_seedlock.local import MODEL_NAME, LocalServer

        if announce:
            print("seedlock: starting llama-server…", file=sys.stderr, flush=True)
        server = stack.enter_context(LocalServer(**server_kwargs(args)))
        props = server.props()
        backend = {
            "kind": "local llama-server",
            "build_info": props.get("build_info"),
            "total_slots": props.get("total_slots"),
            "cache_prompt": server.cache_prompt,
            "flash_attn": server.flash_attn,
            "cache_type_k": server.cache_type_k,
            "cache_type_v": server.cache_type_v,
            "kv_unified": server.kv_unified,
            "startup_s": server.startup_seconds,
        }
        return {"model": args.model or MODEL_NAME, "base_url": server.base_url, "backend": backend}
    if base_url:
        return {
            "model": args.model or DEFAULT_OPENAI_MODEL,
            "base_url": base_url,
            "api_key": os.environ.get("OPENAI_API_KEY"),
            "backend": {"kind": "openai-compatible"},
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


def run(args: argparse.Namespace) -> int:
    from langchain_seedlock._store import default_store_url
    from langchain_seedlock.probe import run_probe

    configure_cli_logging()
    interactive = sys.stderr.isatty() and not args.quiet
    with ExitStack() as stack:
        try:
            probe_kwargs = open_backend(args, stack, announce=interactive)
            if args.embeddings_model:
                probe_kwargs["embeddings"] = _embeddings(args.embeddings_model, probe_kwargs)
            progress = _Progress(args.runs, stack) if interactive else None
            result = run_probe(
                prompt=args.prompt,
                runs=args.runs,
                seed=args.seed,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                concurrency=args.concurrency,
                store=args.store or default_store_url(),
                progress=progress,
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


def _report(result: ProbeResult, args: argparse.Namespace) -> int:
    try:
        if args.json_file:
            text = result.to_json()
            if args.json_file == "-":
                print(text)
            else:
                Path(args.json_file).write_text(text + "\n", encoding="utf-8")
        if args.html_file:
            Path(args.html_file).write_text(result.to_html(), encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write the report: {exc}", EXIT_ERROR)
    if not args.quiet and args.json_file != "-":
        if sys.stdout.isatty():
            from rich.console import Console

            Console().print(result)
        else:
            print(result.to_text())
    if args.fail_under is not None and not result.passed(args.fail_under):
        rate = result.seeded.exact_match_rate
        print(
            f"seedlock probe: seeded exact-match rate {rate:.0%} is below "
            f"--fail-under {args.fail_under:.0%}",
            file=sys.stderr,
        )
        return EXIT_NOT_REPRODUCED
    return EXIT_OK
