"""``seedlock verify``: do recorded requests still reproduce their baseline?

Re-sends seeded requests through the locked model and compares each output
hash with the baseline the store holds for that request hash (the output
seen most often; ties go to the most recent). By default it re-sends the
probe's seeded request (same prompt, seed, temperature and max_tokens
defaults as ``seedlock probe``), so the CI pattern is:

    seedlock probe  --store sqlite:///baselines.db    # once: records the baseline
    seedlock verify --store sqlite:///baselines.db    # later: exit 3 if it drifted

``--prompt`` (repeatable) or ``--prompt-file`` (one prompt per line) verify
other requests with the same lock settings.

``--recorded`` re-sends the requests a chain or agent recorded instead
(system messages, history, tools, response format, sampling parameters and
seed as sent), when it recorded them with ``capture_content=True``; each
answer is compared with the request's outputs like the drift monitor does:
under the same backend identity a reproduced output or a known variant
passes and a new variant fails; under a changed backend identity the drift
is EXPLAINED (passes, fails with ``--strict``). ``--request HASH``
(repeatable, 8+ characters) re-sends only those.

The store is only read: a verification never moves a baseline.

Exit codes: 0 every output matches its baseline; 3 at least one differs;
1 a request has no baseline in the store (nothing to verify against), the
store holds no recorded payload (``--recorded``), or another error; 4 the
backend cannot be reached or started.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_seedlock._errors import BackendUnavailableError, InvalidArgumentError, SeedLockError
from langchain_seedlock._identity import Fields, parse_env_backend
from langchain_seedlock.cli import (
    EXIT_BACKEND,
    EXIT_ERROR,
    EXIT_NOT_REPRODUCED,
    EXIT_OK,
    EXIT_USAGE,
    float_between,
    int_at_least,
    open_existing_store,
    prompt_text,
    seed,
)
from langchain_seedlock.cli._probe_cmd import (
    add_backend_arguments,
    configure_cli_logging,
    open_backend,
)
from langchain_seedlock.cli._serve_cmd import add_server_arguments

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from langchain_seedlock._store._base import BaselineStore, OutputSeen


def add_parser(subparsers: Any) -> None:
    from langchain_seedlock.probe._runner import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT

    parser = subparsers.add_parser(
        "verify",
        help="re-send seeded requests and compare with the store's baselines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store", default=None, metavar="URL",
        help="the baseline store (default: $SEEDLOCK_STORE or SQLite in the user state directory)",
    )  # fmt: skip
    parser.add_argument(
        "--prompt", action="append", default=None, type=prompt_text,
        help=f"a prompt to verify (repeatable; default: the probe's prompt {DEFAULT_PROMPT!r})",
    )  # fmt: skip
    parser.add_argument("--prompt-file", type=Path, help="prompts to verify, one per line")
    parser.add_argument("--seed", type=seed, default=123, help="the lock's seed (default: 123)")
    parser.add_argument(
        "--temperature", type=float_between(0.0, 2.0), default=0.7, help="(default: 0.7)"
    )
    parser.add_argument("--max-tokens", type=int_at_least(1), default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--runs", type=int_at_least(1), default=1, help="sends per prompt (default: 1)"
    )
    recorded = parser.add_argument_group("recorded requests")
    recorded.add_argument(
        "--recorded", action="store_true",
        help="re-send the requests recorded with capture_content=True (not the probe's)",
    )  # fmt: skip
    recorded.add_argument(
        "--request", action="append", default=None, metavar="HASH",
        help="with --recorded: only this request (8+ characters of its hash; repeatable)",
    )  # fmt: skip
    recorded.add_argument(
        "--strict", action="store_true",
        help="with --recorded: a drift explained by a backend change fails too",
    )  # fmt: skip
    recorded.add_argument(
        "--backend", default=None, metavar="SETTINGS",
        help="with --recorded: the backend settings the chain declared when recording "
        "(SeedLock(backend=...)), as k=v pairs or JSON, e.g. 'gpu=A100,kv_cache=q8_0' "
        "(SEEDLOCK_BACKEND is read too)",
    )  # fmt: skip
    add_backend_arguments(parser)
    add_server_arguments(parser)
    parser.set_defaults(run=run)


def baseline_output(outputs: list[OutputSeen]) -> OutputSeen | None:
    """The reference output of a request: seen most often, then most recently."""
    if not outputs:
        return None
    return max(outputs, key=lambda o: (o.count, o.last_seen))


class _NoPromptsError(ValueError):
    """--prompt-file holds no prompt: verifying nothing must not pass."""


def _prompts(args: argparse.Namespace) -> list[str]:
    from langchain_seedlock.probe._runner import DEFAULT_PROMPT

    prompts = list(args.prompt or [])
    if args.prompt_file is not None:
        text = args.prompt_file.read_text(encoding="utf-8")
        from_file = [line.strip() for line in text.splitlines() if line.strip()]
        if not from_file:
            raise _NoPromptsError(
                f"--prompt-file {str(args.prompt_file)!r} holds no prompt (one per line); "
                "verifying nothing would pass"
            )
        prompts += from_file
    return prompts or [DEFAULT_PROMPT]


def _seeded_model(args: argparse.Namespace, kwargs: dict[str, Any]) -> BaseChatModel:
    from langchain_seedlock.probe._runner import build_models

    if "chat_models" in kwargs:
        seeded: BaseChatModel = kwargs["chat_models"][1]
        return seeded
    _, seeded = build_models(
        model=kwargs["model"],
        base_url=kwargs.get("base_url"),
        api_key=kwargs.get("api_key"),
        seed=args.seed,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        timeout=120.0,
    )
    return seeded


def _short(value: str | None) -> str:
    return "-" if value is None else value[:12]


def run(args: argparse.Namespace) -> int:
    from langchain_seedlock.probe._runner import run_arm

    configure_cli_logging()
    if args.recorded or args.request or args.strict or args.backend:
        return _run_recorded(args)
    drifted = missing = 0
    with ExitStack() as stack:
        try:
            prompts = _prompts(args)
            # Only read: a mistyped --store is an error, never a new empty store.
            store: BaselineStore = stack.enter_context(open_existing_store(args.store))
            model = _seeded_model(args, open_backend(args, stack))
            for prompt in prompts:
                for run_ in run_arm(
                    model, arm="seeded", prompt=prompt, runs=args.runs, seed=args.seed
                ):
                    if run_.request_hash is None or run_.output_hash is None:
                        raise SeedLockError("the model did not report seedlock hashes")
                    expected = baseline_output(store.outputs_for(run_.request_hash))
                    label = f"request {_short(run_.request_hash)} ({run_.excerpt[:40]!r})"
                    if expected is None:
                        missing += 1
                        print(f"NO BASELINE {label}")
                    elif expected.output_hash == run_.output_hash:
                        print(f"OK          {label}")
                    else:
                        drifted += 1
                        print(
                            f"DRIFT       {label}: output {_short(run_.output_hash)}, "
                            f"baseline {_short(expected.output_hash)} "
                            f"(fingerprint then {expected.system_fingerprint}, "
                            f"now {run_.system_fingerprint})"
                        )
        except _NoPromptsError as exc:
            print(f"seedlock verify: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BackendUnavailableError as exc:
            print(f"seedlock verify: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_BACKEND
        except (SeedLockError, OSError, ValueError) as exc:
            print(f"seedlock verify: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if drifted:
        print(f"seedlock verify: {drifted} output(s) differ from the baseline", file=sys.stderr)
        return EXIT_NOT_REPRODUCED
    if missing:
        print(
            f"seedlock verify: {missing} request(s) have no baseline in the store; "
            "record one with `seedlock probe --store ...` first",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def _recorded_options(args: argparse.Namespace) -> Fields | None:
    """The declared backend settings of ``--recorded``; None (said why) on a usage error."""
    given = [f"--{n}" for n in ("prompt", "prompt_file", "model") if getattr(args, n)]
    if not args.recorded or given:
        print(
            "seedlock verify: error: "
            + (f"{', '.join(given)} cannot be given with --recorded: it re-sends the "
               "recorded requests as they were" if given else
               "--request, --strict and --backend go with --recorded"),
            file=sys.stderr,
        )  # fmt: skip
        return None
    try:
        return parse_env_backend(args.backend or "", owner="seedlock verify", name="--backend")
    except InvalidArgumentError as exc:
        print(f"seedlock verify: error: {exc}", file=sys.stderr)
        return None


def _run_recorded(args: argparse.Namespace) -> int:
    from langchain_seedlock._decide import Verdict
    from langchain_seedlock._payload import PayloadError
    from langchain_seedlock.cli._verify_recorded import NotResendableError, resend, select

    declared = _recorded_options(args)
    if declared is None:
        return EXIT_USAGE
    failed = explained = missing = 0
    with ExitStack() as stack:
        try:
            store: BaselineStore = stack.enter_context(open_existing_store(args.store))
            hashes = select(store, args.request)
            backend = open_backend(args, stack)
            if "chat_models" in backend:
                raise NotResendableError(
                    "--recorded re-sends OpenAI-compatible requests: give --base-url "
                    "(Azure OpenAI is not supported)"
                )
            for request_hash in hashes:
                for _ in range(args.runs):
                    try:
                        r = resend(
                            store, request_hash, base_url=backend.get("base_url"),
                            api_key=backend.get("api_key"), declared=declared,
                        )  # fmt: skip
                    except (NotResendableError, PayloadError) as exc:
                        missing += 1
                        print(f"NOT RESENT  request {_short(request_hash)}: {exc}")
                        break
                    label = f"request {_short(r.request_hash)}"
                    detail = (
                        f"output {_short(r.output_hash)}, baseline {_short(r.usual_output)} "
                        f"(fingerprint then {r.fingerprint_then}, now {r.fingerprint_now})"
                    )
                    if r.verdict in (Verdict.REPRODUCED, Verdict.KNOWN_VARIANT):
                        word = "OK" if r.verdict is Verdict.REPRODUCED else "KNOWN"
                        print(f"{word:<11} {label}")
                    elif r.verdict is Verdict.NEW_VARIANT:
                        failed += 1
                        print(f"DRIFT       {label}: new variant under the same backend; {detail}")
                    elif r.verdict is Verdict.EXPLAINED:
                        explained += 1
                        print(f"EXPLAINED   {label}: the backend identity changed; {detail}")
                    else:  # first (no output stored) or incomplete (cut: never a baseline)
                        missing += 1
                        why = "no baseline" if r.verdict is Verdict.FIRST else "output cut"
                        print(f"NO BASELINE {label}: {why}")
        except BackendUnavailableError as exc:
            print(f"seedlock verify: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_BACKEND
        except (SeedLockError, OSError, ValueError) as exc:
            print(f"seedlock verify: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if explained:
        print(
            f"seedlock verify: {explained} output(s) differ under a changed backend identity "
            "(explained" + ("; --strict: failing)" if args.strict else ")"),
            file=sys.stderr,
        )
    if failed:
        print(f"seedlock verify: {failed} new variant(s) under the same backend", file=sys.stderr)
    if failed or (explained and args.strict):
        return EXIT_NOT_REPRODUCED
    if missing:
        print(
            f"seedlock verify: {missing} recorded request(s) could not be verified",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK
