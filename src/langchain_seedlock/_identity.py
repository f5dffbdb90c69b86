"""Backend identity: what served a call, as a few named fields hashed to one id.

Three sources, each field tagged with its own:

- ``response``: what every response says (fingerprint, resolved model, service
  tier); always known.
- ``server``: what the server says about itself (llama.cpp ``GET /props``,
  vLLM ``GET /version``, Ollama ``GET /api/version`` + the model digest from
  ``POST /api/show``, SGLang ``GET /get_server_info``). Fetched once per base
  URL and model by a background thread, cached for `SERVER_INFO_TTL`, never
  on a user's call: a call made before the answer arrived has no server
  fields (``server=None``: *unknown*, not "none"). Unknown servers give
  nothing, quietly; a failure is logged once per base URL and ignored.
- ``declared``: what no server exposes (flash attention, KV-cache type, GPU,
  a batch-invariant mode), declared by the user with
  ``SeedLock(..., backend={...})`` or ``SEEDLOCK_BACKEND``, or by `LocalServer`
  for its own flags.

Unknown is not a change: `changed_fields` compares server fields only when
both sides know them, and the drift monitor lets a call whose server fields
are not known yet inherit the model's last known ones (`inherit_server`).
An identity with only response fields hashes to the id the package always
used (`_hashing.backend_id`), so stored baselines keep their backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from langchain_seedlock import _events as ev
from langchain_seedlock._errors import InvalidArgumentError, is_connection_error
from langchain_seedlock._hashing import backend_id, sha256_hex
from langchain_seedlock._redact import redact_optional_url

if TYPE_CHECKING:
    from langchain_seedlock._record import CallRecord

ENV_BACKEND: Final = "SEEDLOCK_BACKEND"
# Seconds a server's self-description is trusted before it is fetched again.
SERVER_INFO_TTL: Final = 60.0
# A fetch that could not reach the server is retried after this many seconds,
# doubling with each failure in a row up to SERVER_INFO_TTL.
FETCH_RETRY: Final = 2.0
# A new variant has the server described again, at most this often.
NEW_VARIANT_REFETCH: Final = 5.0
# Seconds each server-info request may take (on the background thread).
SERVER_INFO_TIMEOUT: Final = 2.0
MAX_DECLARED_FIELDS: Final = 32
MAX_VALUE_CHARS: Final = 200

Scalar = str | int | float | bool | None
Fields = tuple[tuple[str, Scalar], ...]
"""Sorted (name, value) pairs: hashable, comparable, cheap to keep."""

SOURCE_RESPONSE: Final = "response"
SOURCE_SERVER: Final = "server"
SOURCE_DECLARED: Final = "declared"


@dataclass(frozen=True, slots=True)
class BackendIdentity:
    """The identity of the backend that answered one call (see the module docstring)."""

    system_fingerprint: str | None = None
    model: str | None = None
    service_tier: str | None = None
    server: Fields | None = None
    """The server's own fields, or None while unknown (not fetched yet, or
    nothing to fetch)."""
    declared: Fields = ()
    id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.server and not self.declared:
            ident = backend_id(self.system_fingerprint, self.model, self.service_tier)
        else:
            ident = sha256_hex(
                {
                    "system_fingerprint": self.system_fingerprint,
                    "model": self.model,
                    "service_tier": self.service_tier,
                    "server": dict(self.server or ()),
                    "declared": dict(self.declared),
                }
            )[:16]
        object.__setattr__(self, "id", ident)

    def fields(self) -> dict[str, dict[str, Any]]:
        """Every known field: ``{name: {"value": ..., "source": ...}}`` (a
        declared field shadows a server field of the same name)."""
        out: dict[str, dict[str, Any]] = {
            "system_fingerprint": {"value": self.system_fingerprint, "source": SOURCE_RESPONSE},
            "model": {"value": self.model, "source": SOURCE_RESPONSE},
            "service_tier": {"value": self.service_tier, "source": SOURCE_RESPONSE},
        }
        for name, value in self.server or ():
            out[name] = {"value": value, "source": SOURCE_SERVER}
        for name, value in self.declared:
            out[name] = {"value": value, "source": SOURCE_DECLARED}
        return out

    def to_json(self) -> str:
        """The identity as stored (``identities.fields``)."""
        return json.dumps(
            {
                "system_fingerprint": self.system_fingerprint,
                "model": self.model,
                "service_tier": self.service_tier,
                "server": None if self.server is None else dict(self.server),
                "declared": dict(self.declared),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BackendIdentity:
        data = json.loads(text)
        server = data.get("server")
        return cls(
            data.get("system_fingerprint"),
            data.get("model"),
            data.get("service_tier"),
            None if server is None else _sorted(server),
            _sorted(data.get("declared") or {}),
        )

    def with_server(self, server: Fields | None) -> BackendIdentity:
        return BackendIdentity(
            self.system_fingerprint, self.model, self.service_tier, server, self.declared
        )


def _sorted(fields: Mapping[str, Any]) -> Fields:
    return tuple(sorted((str(k), v) for k, v in fields.items()))


def changed_fields(old: BackendIdentity, new: BackendIdentity) -> dict[str, list[Scalar]]:
    """The fields that differ, ``{name: [old, new]}``. Response and declared
    fields always count (an undeclared field is None); server fields only
    when both identities know them: unknown -> known is not a change."""
    out: dict[str, list[Scalar]] = {}
    for name in ("system_fingerprint", "model", "service_tier"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out[name] = [a, b]
    groups = [(old.declared, new.declared)]
    if old.server is not None and new.server is not None:
        groups.insert(0, (old.server, new.server))
    for a_fields, b_fields in groups:
        a, b = dict(a_fields), dict(b_fields)
        for name in sorted(a.keys() | b.keys()):
            if a.get(name) != b.get(name):
                out[name] = [a.get(name), b.get(name)]
    return out


def inherit_server(new: BackendIdentity, last: BackendIdentity | None) -> BackendIdentity:
    """``new`` with ``last``'s server fields when its own are not known yet
    (its server info is still being fetched) and nothing else changed: a call
    made before the fetch completes keeps the backend of the calls before it."""
    if new.server is not None or last is None or last.server is None:
        return new
    candidate = new.with_server(last.server)
    return candidate if not changed_fields(last, candidate) else new


# -- declared fields -------------------------------------------------------------------


def check_declared(owner: str, name: str, value: Any) -> Fields:
    """A user's declared identity (a mapping of short names to scalars), as `Fields`."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            owner, name, value,
            'must be a mapping of backend settings, e.g. {"kv_cache": "q8_0", "flash_attn": False}',
        )  # fmt: skip
    if len(value) > MAX_DECLARED_FIELDS:
        raise InvalidArgumentError(
            owner, name, f"<{len(value)} fields>", f"has more than {MAX_DECLARED_FIELDS} fields"
        )
    out: dict[str, Scalar] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 64:
            raise InvalidArgumentError(
                owner, name, key, "has a field name that is not a short non-empty string"
            )
        if not (item is None or isinstance(item, str | int | float | bool)):
            raise InvalidArgumentError(
                owner, name, value,
                f"field {key!r} must be a string, number, bool or None "
                f"(got {type(item).__name__})",
            )  # fmt: skip
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidArgumentError(owner, name, value, f"field {key!r} is not finite")
        if isinstance(item, str) and len(item) > MAX_VALUE_CHARS:
            raise InvalidArgumentError(
                owner, name, value, f"field {key!r} is longer than {MAX_VALUE_CHARS} characters"
            )
        out[key.strip()] = item
    return _sorted(out)


def parse_env_backend(text: str, *, owner: str = "environment", name: str = ENV_BACKEND) -> Fields:
    """``SEEDLOCK_BACKEND`` (or a command's option, ``owner`` / ``name`` in
    its errors): a JSON object, or ``k=v,k=v`` (values as strings)."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidArgumentError(owner, name, text, f"is not valid JSON ({exc})") from None
        return check_declared(owner, name, value)
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, item = part.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(
                owner, name, text,
                "must be a JSON object or k=v pairs separated by commas, "
                'e.g. "kv_cache=q8_0,gpu=A100"',
            )  # fmt: skip
        pairs[key.strip()] = item.strip()
    return check_declared(owner, name, pairs)


_ENV_CACHE: tuple[str, Fields] | None = None


def env_declared() -> Fields:
    """The fields declared by ``SEEDLOCK_BACKEND`` (parsed once per value).

    A bad value raises `InvalidArgumentError` when a door is created (see
    `check_env_backend`), so a call never meets it."""
    global _ENV_CACHE  # noqa: PLW0603 - a one-entry cache of an environment value
    text = os.environ.get(ENV_BACKEND, "")
    cached = _ENV_CACHE
    if cached is not None and cached[0] == text:
        return cached[1]
    try:
        fields = parse_env_backend(text)
    except InvalidArgumentError:
        fields = ()  # checked at the door's construction; never fails a call
    _ENV_CACHE = (text, fields)
    return fields


def check_env_backend() -> None:
    """Raise `InvalidArgumentError` if ``SEEDLOCK_BACKEND`` is set and malformed."""
    parse_env_backend(os.environ.get(ENV_BACKEND, ""))


def merge_declared(*groups: Fields) -> Fields:
    """Later groups win a name."""
    present = [group for group in groups if group]
    if not present:
        return ()  # the common case, on every call: nothing declared
    out: dict[str, Scalar] = {}
    for group in present:
        out.update(group)
    return _sorted(out)


# -- server fields --------------------------------------------------------------------

_SAMPLING_DEFAULTS: Final = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")


def llama_props_fields(props: Mapping[str, Any]) -> dict[str, Scalar]:
    """The identity fields of a llama.cpp ``GET /props`` answer."""
    out: dict[str, Scalar] = {"server": "llama.cpp"}
    if isinstance(props.get("build_info"), str):
        out["build_info"] = props["build_info"]
    path = props.get("model_path")
    if isinstance(path, str) and path:
        out["model_file"] = os.path.basename(path)  # not the user's directories
    if isinstance(props.get("model_ftype"), str):
        out["model_type"] = props["model_ftype"]
    if isinstance(props.get("total_slots"), int):
        out["total_slots"] = props["total_slots"]
    template = props.get("chat_template")
    if isinstance(template, str) and template:
        out["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest()[:16]
    settings = props.get("default_generation_settings")
    if isinstance(settings, Mapping):
        if isinstance(settings.get("n_ctx"), int):
            out["n_ctx"] = settings["n_ctx"]
        params = settings.get("params")
        if isinstance(params, Mapping):
            for name in _SAMPLING_DEFAULTS:
                value = params.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[f"default_{name}"] = round(float(value), 6)
    return out


def _get_json(url: str, body: Mapping[str, Any] | None = None) -> Any:
    import urllib.request  # on the fetch thread only: not an import cost of the package

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - the model's own base URL
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(req, timeout=SERVER_INFO_TIMEOUT) as resp:  # noqa: S310
        return json.loads(resp.read())


def _short(value: Any) -> Scalar:
    if isinstance(value, str | int | float | bool) or value is None:
        return value[:MAX_VALUE_CHARS] if isinstance(value, str) else value
    return json.dumps(value, sort_keys=True, default=str)[:MAX_VALUE_CHARS]


def _ollama_digest(root: str, model: str) -> str | None:
    """The digest of ``model``'s weights as Ollama lists them (``GET /api/tags``:
    ``/api/show`` carries no digest); None when not listed. A tagless name
    means ``:latest``, as in Ollama."""
    import urllib.error

    try:
        listed = _get_json(root + "/api/tags")
    except (urllib.error.HTTPError, ValueError):
        return None
    models = listed.get("models") if isinstance(listed, Mapping) else None
    wanted = {model, model if ":" in model else f"{model}:latest"}
    for entry in models if isinstance(models, list) else ():
        if not isinstance(entry, Mapping):
            continue
        if {entry.get("name"), entry.get("model")} & wanted:
            digest = entry.get("digest")
            return digest[:80] if isinstance(digest, str) else None
    return None


def fetch_server_fields(base_url: str, model: str | None) -> dict[str, Scalar]:
    """Ask the server at ``base_url`` (``http://host:port/v1``) what it is.

    Tries each known server's endpoint in turn; ``{}`` for a server that
    answers none of them (an unknown server: nothing to add). Connection
    errors propagate (the caller logs them once)."""
    import urllib.error

    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    attempts: list[tuple[str, Any]] = [
        ("/props", lambda d: llama_props_fields(d) if "build_info" in d else None),
        ("/api/version", lambda d: {"server": "ollama", "version": _short(d.get("version"))}),
        (
            "/get_server_info",
            lambda d: (
                {"server": "sglang", "version": _short(d.get("version"))}
                | {k: _short(d[k]) for k in ("enable_deterministic_inference", "tp_size") if k in d}
            ),
        ),
        ("/version", lambda d: {"server": "vllm", "version": _short(d.get("version"))}),
    ]
    for path, parse in attempts:
        try:
            data = _get_json(root + path)
        except urllib.error.HTTPError:
            continue  # not this kind of server
        except ValueError:
            continue  # not JSON: not this kind of server
        if not isinstance(data, Mapping):
            continue
        fields = parse(data)
        if not fields:
            continue
        if fields.get("server") == "ollama" and model:
            digest = _ollama_digest(root, model)
            if digest is not None:
                fields["model_digest"] = digest
        return dict(fields)
    return {}


@dataclass(slots=True)
class _Entry:
    fields: Fields | None = None  # None: not known (fetching, failed, unknown server)
    fetched_at: float = 0.0  # monotonic; 0: never (or to be fetched again)
    fetching: bool = False
    unknown: bool = False  # answered none of the endpoints: never asked again
    failures: int = 0  # fetches failed in a row (the retry backs off)
    invalidated: bool = False  # `ServerInfo.invalidate` since this fetch started


class ServerInfo:
    """Server fields per (base URL, model), fetched off the call path.

    `get` never blocks and never sends a request itself: it returns what is
    cached (None when unknown) and, when nothing fresh is cached, starts one
    background fetch. Thread-safe; one registry per process (`SERVERS`).
    """

    def __init__(self, ttl: float = SERVER_INFO_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._failed: set[str] = set()  # base URLs whose failure was logged
        self._declared: dict[str, Fields] = {}

    def get(self, base_url: str | None, model: str | None) -> Fields | None:
        """The cached server fields, or None while unknown (a fetch starts)."""
        if not base_url:
            return None
        key = (base_url, model)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            stale = not entry.fetched_at or now - entry.fetched_at > self.ttl
            if stale and not entry.fetching and not entry.unknown:
                entry.fetching = True
                entry.invalidated = False
                threading.Thread(
                    target=self._fetch, args=(key, entry), name="seedlock-server-info", daemon=True
                ).start()
            return entry.fields or None

    def _fetch(self, key: tuple[str, str | None], entry: _Entry) -> None:
        base_url, model = key
        try:
            fields = fetch_server_fields(base_url, model)
        except Exception as exc:  # noqa: BLE001 - server info is optional: logged once, ignored
            fields = None
            with self._lock:
                first = base_url not in self._failed
                self._failed.add(base_url)
            if first:
                ev.emit(
                    "ServerInfo.fetch", "info", ev.BACKEND_INFO_UNAVAILABLE,
                    **{
                        "server.address": redact_optional_url(base_url),
                        ev.K_ERROR_TYPE: type(exc).__qualname__,
                        "error": str(exc)[:200],
                    },
                )  # fmt: skip
        with self._lock:
            if fields is not None or entry.fields is None:
                entry.fields = _sorted(fields) if fields else None
            entry.unknown = fields == {}
            entry.fetched_at = time.monotonic()
            entry.fetching = False
            if fields is None:  # unreachable (restarting?): asked again soon, then less often
                entry.failures += 1
                retry = min(self.ttl, FETCH_RETRY * 2 ** (entry.failures - 1))
                entry.fetched_at -= self.ttl - retry
            else:
                entry.failures = 0
            if entry.invalidated:  # during this fetch: it may have asked too early
                entry.fetched_at = 0.0

    def invalidate(self, base_url: str, *, older_than: float = 0.0) -> None:
        """Have the next call to ``base_url`` fetch its description again
        (unless it was fetched less than ``older_than`` seconds ago)."""
        now = time.monotonic()
        with self._lock:
            for (url, _), entry in self._entries.items():
                if url == base_url and now - entry.fetched_at >= older_than:
                    entry.fetched_at = 0.0
                    entry.invalidated = True

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until no fetch is running (for scripts and tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not any(e.fetching for e in self._entries.values()):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def declare(self, base_url: str, fields: Fields) -> None:
        """Settings of the server at ``base_url`` that it does not expose
        (`LocalServer` declares its own flags here)."""
        with self._lock:
            self._declared[base_url.rstrip("/")] = fields

    def declared(self, base_url: str | None) -> Fields:
        if not base_url or not self._declared:
            return ()
        return self._declared.get(base_url.rstrip("/"), ())

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._entries.clear()
            self._failed.clear()
            self._declared.clear()

    def after_fork_in_child(self) -> None:
        # A parent's fetch thread may have held the lock, and is gone: its
        # entries would stay "fetching" forever.
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.fetching = False


SERVERS: Final = ServerInfo()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=SERVERS.after_fork_in_child)


# Recent identities by their fields: a call answered like the one before it
# (the common case) reuses its identity instead of hashing ~20 fields again
# (~25 us with a server's fields). The server's fields are keyed by the
# cached tuple's identity (held by the memo, so never reused); declared
# values with their types (1, 1.0 and True differ in the id's JSON).
_IDENTITIES: dict[tuple[Any, ...], BackendIdentity] = {}
_PARTIAL_IDS: dict[str, str | None] = {}
_MEMO_SIZE: Final = 256


def identity_for(
    *,
    fingerprint: str | None,
    model: str | None,
    service_tier: str | None,
    base_url: str | None,
    request_model: str | None,
    declared: Fields = (),
) -> BackendIdentity:
    """One call's identity: its response fields, the server's cached fields
    (None while unknown) and the declared ones (``SEEDLOCK_BACKEND``, then
    the server's own declaration, then ``declared``: later wins)."""
    server = SERVERS.get(base_url, request_model)
    merged = merge_declared(env_declared(), SERVERS.declared(base_url), declared)
    key = (
        fingerprint, model, service_tier, None if server is None else id(server),
        tuple((k, type(v), v) for k, v in merged),
    )  # fmt: skip
    identity = _IDENTITIES.get(key)
    if identity is None:
        identity = BackendIdentity(fingerprint, model, service_tier, server, merged)
        _remember(_IDENTITIES, key, identity)
    return identity


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()  # a new set of backends: start over (a lost race only costs a hash)
    memo[key] = value


def note_failure(base_url: str | None, error: BaseException) -> None:
    """A call to ``base_url`` failed. If it could not connect, the server may
    be restarting, perhaps with other settings: the next call fetches its
    description again (at its start, `prefetch`), so answers that change
    with the restart are explained, not reported as new (instead of
    waiting up to `SERVER_INFO_TTL` for the cached description to expire)."""
    if base_url and is_connection_error(error):
        SERVERS.invalidate(base_url)


def note_new_variant(base_url: str | None) -> None:
    """A call to ``base_url`` answered a known request in a new way. The server
    may have been restarted with other settings between two calls (no call
    failed): the next call fetches its description again, so if it did, the
    changed answers after this first one are explained (at most once per
    `NEW_VARIANT_REFETCH` seconds)."""
    if base_url:
        SERVERS.invalidate(base_url, older_than=NEW_VARIANT_REFETCH)


def prefetch(base_url: str | None, request_model: str | None) -> None:
    """Start fetching the server's description when a call starts (never
    blocks): it usually arrives before the answer, so even a process's first
    call carries the server's fields and is stored under its full identity."""
    SERVERS.get(base_url, request_model)


def identity_of(record: CallRecord) -> BackendIdentity:
    """`identity_for` a call's record: its response fields, its base URL's
    cached server fields and its declared ones."""
    return identity_for(
        fingerprint=record.system_fingerprint, model=record.response_model,
        service_tier=record.service_tier, base_url=record.base_url,
        request_model=record.request_model, declared=record.declared,
    )  # fmt: skip


def server_slots(identity: BackendIdentity | None) -> int | None:
    """The server's slot count where it says it (llama.cpp ``total_slots``)."""
    if identity is None or not identity.server:
        return None
    value = dict(identity.server).get("total_slots")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# Backend changes remembered per model (so a backend flapping between two
# identities warns once per direction); beyond, the memory starts over.
MAX_REPORTED_CHANGES: Final = 256


def track(
    last: BackendIdentity | None, new: BackendIdentity, reported: set[tuple[str, str]]
) -> tuple[BackendIdentity, tuple[dict[str, list[Scalar]], BackendIdentity] | None]:
    """A model's call: its effective identity (`inherit_server`) and, when it
    differs from the model's ``last`` identity in a way not reported before,
    the changed fields and the previous identity (``reported`` is updated).

    A fingerprint that went missing (or came back) is not a change here: the
    fingerprint events cover it."""
    effective = inherit_server(new, last)
    if last is None or last.id == effective.id:
        return effective, None
    changes = changed_fields(last, effective)
    fp = changes.get("system_fingerprint")
    if fp is not None and None in fp:
        del changes["system_fingerprint"]
    key = (last.id, effective.id)
    if not changes or key in reported:
        return effective, None
    if len(reported) >= MAX_REPORTED_CHANGES:
        reported.clear()
    reported.add(key)
    return effective, (changes, last)


def partial_id(identity: BackendIdentity) -> str | None:
    """The id the same backend had before its server fields were known (the
    first calls of a process that never saw them): its variants are this
    backend's. None when ``identity`` has no server fields."""
    if not identity.server:
        return None
    partial = _PARTIAL_IDS.get(identity.id)
    if partial is None:
        partial = identity.with_server(None).id
        _remember(_PARTIAL_IDS, identity.id, partial)
    return partial


def declared_of(model: Any) -> Fields:
    """The backend declared by a locked model's lock (``SeedLock(backend=...)``):
    a model object, or its serialized form (what a callback handler sees)."""
    if isinstance(model, Mapping):
        kwargs = model.get("kwargs")
        lock = kwargs.get("lock") if isinstance(kwargs, Mapping) else None
        backend = lock.get("backend") if isinstance(lock, Mapping) else None
        try:
            return check_declared("SeedLock", "backend", backend)
        except InvalidArgumentError:
            return ()  # not ours to refuse here: the lock was checked when made
    declared = getattr(getattr(model, "lock", None), "backend", ())
    return declared if isinstance(declared, tuple) else ()
