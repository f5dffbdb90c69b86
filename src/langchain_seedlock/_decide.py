"""The drift decision: pure functions of a call and what is known before it.

No I/O, no clock, no globals: the drift monitor gathers the history (from its
cache or the store), calls `decide` (which calls `classify`), and acts on the
result. The rate
detector `RateCusum` is a small value object updated with one Bernoulli
observation per repeat call.

Verdicts, for one call of a seeded request under one backend identity:

- ``first``: the request was never seen: the output becomes its baseline.
- ``reproduced``: the output is the request's usual (most frequent) output
  under this backend.
- ``known_variant``: an output seen before for this request under this
  backend, not the usual one: normal variance of a best-effort seed.
- ``new_variant``: never seen for this request under this backend: the event
  worth a warning, unless the backend is known to be noisy.
- ``explained``: the request was seen only under other backend identities,
  and this output is new: the backend change explains it.
- ``incomplete``: the output was cut (no finish reason): never a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

from langchain_seedlock._record import CallRecord

Severity = Literal["debug", "info", "warning"]


class Verdict(StrEnum):
    FIRST = "first"
    REPRODUCED = "reproduced"
    KNOWN_VARIANT = "known_variant"
    NEW_VARIANT = "new_variant"
    EXPLAINED = "explained"
    INCOMPLETE = "incomplete"


class VariantLike(Protocol):
    """What the decision reads of one known output (the monitor's own cache
    entries qualify, so no copy is made per call)."""

    @property
    def count(self) -> int: ...
    @property
    def first_seen(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Variant:
    """One distinct output of a request under one backend, before this call."""

    count: int
    first_seen: float


History = Mapping[str, Mapping[str, VariantLike]]
"""Per backend identity, the request's known outputs by output hash."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    severity: Severity
    usual_output: str | None
    """The request's most frequent output under this backend (before this call),
    or, for ``explained``, under the backend it was last seen with."""
    usual_count: int
    output_count: int
    """How often this output was seen before, under this backend."""
    distinct_outputs: int
    """Distinct outputs of the request under this backend, this call included."""
    repeat: bool
    """The request was seen before under this backend: the call counts for the
    backend's reproducibility rate (``known`` says how)."""
    known: bool
    """For a repeat call: its output was already known under this backend."""


def usual(variants: Mapping[str, VariantLike]) -> tuple[str, VariantLike] | None:
    """The most frequent output (hash, variant); the oldest wins a tie (it was
    the baseline)."""
    best: tuple[str, VariantLike] | None = None
    for h, v in variants.items():
        if best is None or (v.count, -v.first_seen) > (best[1].count, -best[1].first_seen):
            best = (h, v)
    return best


def classify(
    output_hash: str,
    backend_id: str,
    history: History,
    *,
    complete: bool = True,
    backend_noisy: bool = False,
) -> Decision:
    """Classify one call of a seeded request.

    Args:
        output_hash: this call's output hash.
        backend_id: this call's backend identity.
        history: per backend identity, the request's known outputs by output
            hash, before this call.
        complete: False when the output was cut before its finish reason.
        backend_noisy: the backend's reproducibility rate is low (see
            `is_noisy`): a new variant there is information, not a warning.
    """
    here = history.get(backend_id, {})
    if not complete:
        return Decision(Verdict.INCOMPLETE, "info", None, 0, 0, len(here), False, False)
    base = usual(here)
    if base is None:  # nothing under this backend yet
        others = [u for k, v in history.items() if k != backend_id and (u := usual(v))]
        if not others:
            return Decision(Verdict.FIRST, "debug", None, 0, 0, 1, False, False)
        prev_hash, prev = max(others, key=lambda o: o[1].count)
        severity: Severity = "info"
        verdict = Verdict.EXPLAINED
        if any(output_hash in v for k, v in history.items() if k != backend_id):
            # The same output under a new backend identity: it reproduced.
            verdict, severity = Verdict.REPRODUCED, "debug"
        return Decision(verdict, severity, prev_hash, prev.count, 0, 1, False, False)
    base_hash, base_variant = base
    seen = here.get(output_hash)
    if seen is None:
        return Decision(
            Verdict.NEW_VARIANT, "info" if backend_noisy else "warning", base_hash,
            base_variant.count, 0, len(here) + 1, True, False,
        )  # fmt: skip
    verdict = Verdict.REPRODUCED if output_hash == base_hash else Verdict.KNOWN_VARIANT
    return Decision(
        verdict, "debug" if verdict is Verdict.REPRODUCED else "info", base_hash,
        base_variant.count, seen.count, len(here), True, True,
    )  # fmt: skip


# -- the reproducibility rate -------------------------------------------------------

# A backend is "noisy" when, over at least this many repeat calls, the upper
# 95 % Wilson bound of its known-output rate is below NOISY_RATE.
NOISY_MIN_CALLS: Final = 20
NOISY_RATE: Final = 0.95
Z95: Final = 1.959964


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (0, 1 for no trials)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # Clamped to the rate itself at the ends (k = 0 or n), where rounding
    # would otherwise put the interval a hair off it.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def is_noisy(known: int, repeats: int) -> bool:
    """Whether a backend with ``known`` known outputs in ``repeats`` repeat
    calls is known to vary (a new variant there is not news)."""
    return repeats >= NOISY_MIN_CALLS and wilson(known, repeats)[1] < NOISY_RATE


# RateCusum's settings (see its docstring for how they were chosen).
REFERENCE_CALLS: Final = 50
DROP_RATIO: Final = 0.6
REFERENCE_WINDOW: Final = 1000
THRESHOLD: Final = 14.0
P_MIN: Final = 0.05
P_MAX: Final = 0.99


@dataclass(slots=True)
class RateCusum:
    """A one-sided Bernoulli CUSUM on the known-output stream of a backend.

    Why CUSUM rather than comparing windows: it is the sequential test with
    the shortest detection delay for a given false-alarm rate (Page 1954;
    Moustakides 1986), it needs O(1) state, and its threshold sets the
    false-alarm rate directly. The in-control rate ``p0`` is estimated from
    the first `REFERENCE_CALLS` repeat calls; the alternative is a drop to
    ``p1 = p0 * DROP_RATIO``. The log-likelihood ratio of each observation is
    added to ``s`` (floored at 0); ``s > THRESHOLD`` is an alarm, after which
    the detector restarts with the new rate as its reference.

    With p0 = 0.9 (p1 = 0.54) and a drop to 0.5: an observation adds +1.53
    (unknown output) or -0.51 (known); the mean drift under 0.5 is +0.51 per
    call, so a threshold of 14 alarms after ~30 calls, while under 0.9 the
    mean is -0.31 per call and a false alarm needs a run of luck of
    probability of order e^-14 per excursion. Measured over 30 seeds: 0
    false alarms in 300,000 calls at a stable 0.9 (threshold 10 gave 1 in
    50,000); delay after a drop to 0.5: median 29 calls, max 57.
    """

    reference_known: int = 0
    reference_calls: int = 0
    s: float = 0.0
    run_known: int = 0
    run_calls: int = 0
    """Observations since ``s`` last left 0: CUSUM's estimate of the change
    point, so their rate is the new rate when an alarm fires."""

    @property
    def p0(self) -> float | None:
        if self.reference_calls < REFERENCE_CALLS:
            return None
        rate = self.reference_known / self.reference_calls
        return min(P_MAX, max(P_MIN, rate))

    def update(self, known: bool) -> RateChange | None:
        """Add one repeat call; on an alarm, return the change and restart with
        the observations since the change point as the new reference."""
        p0 = self.p0
        if p0 is None:
            self.reference_calls += 1
            self.reference_known += known
            return None
        p1 = p0 * DROP_RATIO
        step = math.log(p1 / p0) if known else math.log((1 - p1) / (1 - p0))
        self.s = max(0.0, self.s + step)
        # Every observation refines the reference (halving keeps it weighted
        # to the recent ~REFERENCE_WINDOW calls), so a warm-up in which
        # variants were still being discovered is forgotten. Only part of
        # the reference after a long run: a drop moves it little before the
        # alarm fires.
        self.reference_known += known
        self.reference_calls += 1
        if self.reference_calls >= REFERENCE_WINDOW:
            self.reference_known //= 2
            self.reference_calls //= 2
        if self.s == 0.0:
            self.run_known = self.run_calls = 0
            return None
        self.run_calls += 1
        self.run_known += known
        if self.s <= THRESHOLD:
            return None
        change = RateChange(
            self.reference_known, self.reference_calls, self.run_known, self.run_calls
        )
        self.reference_known, self.reference_calls = self.run_known, self.run_calls
        self.run_known = self.run_calls = 0
        self.s = 0.0
        return change


@dataclass(frozen=True, slots=True)
class RateChange:
    """A significant drop of a backend's reproducibility rate."""

    old_known: int
    old_calls: int
    new_known: int
    new_calls: int

    @property
    def old_rate(self) -> float:
        return self.old_known / self.old_calls

    @property
    def new_rate(self) -> float:
        return self.new_known / self.new_calls

    @property
    def old_interval(self) -> tuple[float, float]:
        return wilson(self.old_known, self.old_calls)

    @property
    def new_interval(self) -> tuple[float, float]:
        return wilson(self.new_known, self.new_calls)


# -- one call against its history --------------------------------------------------
@dataclass(slots=True)
class Output:
    """One distinct output of one request, as known (`VariantLike`)."""

    count: int
    first_seen: float
    last_seen: float
    backend_id: str
    fingerprint: str | None
    text: str | None = None  # memory only; never logged without capture_content
    tokens: tuple[str, ...] | None = None
    # Output length in tokens as seen (usage), for "3x longer than usual".
    length: tuple[int, int] | None = None  # (min, max)
    # Its sketch as stored (`_sketch`), to size a change when the text is
    # not in memory (another process saw it).
    sketch: bytes | None = None

    def copy(self) -> Output:
        return Output(
            self.count, self.first_seen, self.last_seen, self.backend_id,
            self.fingerprint, self.text, self.tokens, self.length, self.sketch,
        )  # fmt: skip


@dataclass(slots=True)
class RequestHistory:
    """Per backend identity, a request's distinct outputs by output hash."""

    by_backend: dict[str, dict[str, Output]] = field(default_factory=dict)


@dataclass(slots=True)
class ModelHistory:
    """The fingerprints a model was seen with: (first, last) seen, and the last one."""

    last_fingerprint: str | None = None
    seen: dict[str | None, tuple[float, float]] = field(default_factory=dict)
    identity: Any = None  # the last complete call's `_identity.BackendIdentity`
    reported: set[tuple[str, str]] = field(default_factory=set)  # backend changes logged


@dataclass(slots=True)
class BackendRate:
    """Repeat calls of one model under one backend identity, and the detector
    watching their reproducibility rate."""

    repeats: int = 0
    known: int = 0
    cusum: RateCusum = field(default_factory=RateCusum)


@dataclass(frozen=True, slots=True)
class FingerprintChange:
    previous: str | None
    previous_first_seen: float | None
    previous_last_seen: float | None
    first_seen: float
    """When this call's fingerprint was first seen."""


@dataclass(slots=True)
class CallDecision:
    """Everything decided about one call (what the events report)."""

    fingerprint_changed: FingerprintChange | None = None
    # The identity's changed fields {name: [old, new]} and the previous identity.
    backend_changed: tuple[dict[str, list[Any]], Any] | None = None
    fingerprint_missing: bool = False
    verdict: Decision | None = None
    # The request's usual output (copy), its hash, and this call's output (copy).
    compared: tuple[Output, str, Output] | None = None
    rate: tuple[int, int] = (0, 0)  # the backend's (known, repeats) after this call
    rate_change: RateChange | None = None
    explanation: str | None = None  # the variant event's summary, for OpenTelemetry

    @property
    def incomplete(self) -> bool:
        return self.verdict is not None and self.verdict.verdict is Verdict.INCOMPLETE


def decide(
    record: CallRecord,
    backend: str,
    request: RequestHistory,
    model: ModelHistory | None,
    rate: BackendRate | None,
    *,
    report_missing: bool,
    backend_changed: tuple[dict[str, list[Any]], Any] | None = None,
    partial: str | None = None,
) -> CallDecision:
    """Decide about ``record`` (its backend identity ``backend``) given its
    request's history, its model's (None for a cut output: it says nothing
    about the backend) and its backend's rate (None for an unseeded call:
    drift is defined for seeded requests). ``report_missing``: a missing
    fingerprint was not reported for the model yet; ``backend_changed``: the
    change of backend identity this call shows (`_identity.track`);
    ``partial``: the id this backend had before its server fields were known
    (its outputs count as this backend's).

    No I/O, no clock, no lock: the histories are plain data, and are updated
    with this call (the next call is decided against them). The caller owns
    them (and holds its lock).
    """
    d = CallDecision()
    if model is not None:
        _decide_fingerprint(record, model, d, report_missing=report_missing)
        d.backend_changed = backend_changed
    now = record.at
    if rate is not None:
        d.verdict = classify(
            record.output_hash,
            backend,
            _with_partial(request.by_backend, backend, partial),
            complete=record.complete,
            backend_noisy=is_noisy(rate.known, rate.repeats),
        )
        if d.verdict.verdict is Verdict.INCOMPLETE:
            return d  # never a variant, never a baseline
    here = request.by_backend.setdefault(backend, {})
    current = here.get(record.output_hash)
    if current is None:
        current = here[record.output_hash] = Output(0, now, now, backend, record.system_fingerprint)
    current.count += 1
    current.last_seen = max(current.last_seen, now)
    current.fingerprint = record.system_fingerprint
    if current.text is None and record.output_text is not None:
        current.text = record.output_text
    if current.tokens is None and record.output_token_list is not None:
        current.tokens = record.output_token_list
    if record.output_tokens is not None:
        n = record.output_tokens
        low, high = current.length or (n, n)
        current.length = (min(low, n), max(high, n))
    decision = d.verdict
    if decision is None or rate is None:
        return d
    if decision.repeat:
        rate.repeats += 1
        rate.known += decision.known
        d.rate_change = rate.cusum.update(decision.known)
    d.rate = (rate.known, rate.repeats)
    if decision.verdict in (Verdict.NEW_VARIANT, Verdict.EXPLAINED, Verdict.KNOWN_VARIANT):
        usual_hash = decision.usual_output
        assert usual_hash is not None
        # Under this backend, else before its server fields were known,
        # else (explained) under the backend it was seen with.
        usual = (
            here.get(usual_hash)
            or request.by_backend.get(partial or "", {}).get(usual_hash)
            or next(outs[usual_hash] for outs in request.by_backend.values() if usual_hash in outs)
        )
        # Copies: the caller reports them outside its lock.
        d.compared = (usual.copy(), usual_hash, current.copy())
    return d


def _decide_fingerprint(
    record: CallRecord, model: ModelHistory, d: CallDecision, *, report_missing: bool
) -> None:
    fp = record.system_fingerprint
    now = record.at
    if fp is None:
        d.fingerprint_missing = report_missing
    else:
        previous = model.last_fingerprint
        if previous is not None and previous != fp:
            prev_first, prev_last = model.seen.get(previous, (None, None))
            cur_first = model.seen.get(fp, (now, now))[0]
            d.fingerprint_changed = FingerprintChange(previous, prev_first, prev_last, cur_first)
        model.last_fingerprint = fp
    first, _ = model.seen.get(fp, (now, now))
    model.seen[fp] = (min(first, now), now)


def _with_partial(
    history: dict[str, dict[str, Output]], backend: str, partial: str | None
) -> History:
    """``history`` with the outputs seen before this backend's server fields
    were known (``partial``) counted as this backend's: the server fields
    joining the identity is not a backend change."""
    if partial is None or partial not in history or (backend in history and len(history) == 1):
        return history
    merged: dict[str, VariantLike] = dict(history.get(backend, {}))
    for h, o in history[partial].items():
        mine = merged.get(h)
        merged[h] = (
            o if mine is None
            else Variant(mine.count + o.count, min(mine.first_seen, o.first_seen))
        )  # fmt: skip
    view: dict[str, Mapping[str, VariantLike]] = {k: v for k, v in history.items() if k != partial}
    view[backend] = merged
    return view
