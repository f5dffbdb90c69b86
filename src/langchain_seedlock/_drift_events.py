"""Drift event builders: the fields and the one-line summary of each finding.

Pure functions of the call record and the decision (no I/O, no clock, no
logger): the drift monitor calls them outside its lock and logs the result.
Key fields come first in every dict (the summary, the variant, whether the
backend explains it), so a console renderer that keeps insertion order shows
them first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from langchain_seedlock import _events as ev
from langchain_seedlock._decide import (
    CallDecision,
    Decision,
    Output,
    RateChange,
    Verdict,
    is_noisy,
)
from langchain_seedlock._identity import server_slots
from langchain_seedlock._record import CallRecord
from langchain_seedlock._sketch import (
    Sketcher,
    jaccard,
    shingles,
    sketch_distance,
)

if TYPE_CHECKING:
    from langchain_seedlock._enforce import Violation
    from langchain_seedlock._identity import BackendIdentity

# `seedlock.variant` values, by verdict.
VARIANT_LABELS: Final = {
    Verdict.FIRST: "first",
    Verdict.REPRODUCED: "reproduced",
    Verdict.KNOWN_VARIANT: "known",
    Verdict.NEW_VARIANT: "new",
    Verdict.EXPLAINED: "new",
    Verdict.INCOMPLETE: "incomplete",
}
# What to check first when a request drifts under an unchanged backend.
UNEXPLAINED_HINT: Final = (
    "check concurrency/batching and prompt caching on the server, "
    "or a silent model or settings change"
)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def request_label(record: CallRecord) -> str:
    """A short name for the request, never its text: the user's
    ``seedlock_label`` run metadata, else the graph node and step, else the
    start of the request hash."""
    ctx = record.context
    label = ctx.get("seedlock_label")
    if label:
        return str(label)[:80]
    node = ctx.get("langgraph_node")
    if node:
        step = ctx.get("langgraph_step", ctx.get("agent_step"))
        return f"{node}#{step}" if step is not None else str(node)
    return record.request_hash[:12]


def first_difference(a: str, b: str) -> int:
    """Index of the first character where ``a`` and ``b`` differ (the length of
    the shorter one when it is a prefix of the other)."""
    n = min(len(a), len(b))
    lo = 0
    # Compare in blocks first: long shared prefixes are the common case.
    step = 256
    while lo + step <= n and a[lo : lo + step] == b[lo : lo + step]:
        lo += step
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


def first_token_difference(a: Sequence[str], b: Sequence[str]) -> int:
    """Index of the first token where two token lists differ."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' 3-word shingles: the measure the
    sketches estimate, so ``seedlock.similarity`` means one thing whether the
    texts are in memory (exact) or only their sketches (estimated). Linear in
    the texts' length."""
    return round(jaccard(shingles(a), shingles(b)), 4)


def sketch_estimate(
    usual: Output, current: Output, cur_text: str | None, sketcher: Sketcher | None
) -> tuple[str, float] | None:
    """(``seedlock.divergence_at``, estimated similarity) from the two outputs'
    sketches, or None when one is unknown (or unreadable)."""
    if usual.sketch is None:
        return None
    cur = current.sketch
    if cur is None and cur_text is not None and sketcher is not None:
        cur = sketcher.sketch(cur_text)
    found = sketch_distance(usual.sketch, cur)
    return None if found is None else (found[0], round(found[1], 4))


def _backend_change(usual: Output, record: CallRecord) -> str:
    if usual.fingerprint != record.system_fingerprint:
        return f"fingerprint {usual.fingerprint} -> {record.system_fingerprint}"
    return f"backend {usual.backend_id} -> {record.backend_id}, same fingerprint"


def _length_note(usual: Output, current: Output) -> str:
    if usual.length is None or current.length is None:
        return ""
    low, high = usual.length
    n = current.length[1]
    if high and n >= 2 * high:
        return f", {n / high:.1f}x longer than usual ({low}-{high} tokens)"
    if low and n * 2 <= low:
        return f", {low / max(n, 1):.1f}x shorter than usual ({low}-{high} tokens)"
    return ""


def variant_event(
    record: CallRecord,
    base: dict[str, Any],
    decision: Decision,
    *,
    usual: Output,
    usual_hash: str,
    current: Output,
    rate: tuple[int, int],
    capture_content: bool,
    sketcher: Sketcher | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """(level, event name, fields) for a known variant, a new variant or an
    explained change; the fields compare the call with the request's usual output.

    When both texts are in memory the first difference and the similarity are
    exact; else, when the usual output's stored sketch and this call's (made
    with ``sketcher``, the store's key) are known, they are estimated: the
    range of the first difference (``seedlock.divergence_at``) and the
    shingle similarity (``seedlock.similarity_is_estimate``)."""
    verdict = decision.verdict
    explained = verdict is Verdict.EXPLAINED
    label = request_label(record)
    known, repeats = rate
    where: dict[str, Any] = {
        ev.K_DIFF_CHAR: None,
        ev.K_DIFF_TOKEN: None,
        ev.K_SIMILARITY: None,
        ev.K_SIMILARITY_ESTIMATE: None,
        ev.K_DIVERGENCE_AT: None,
    }
    cur_text = record.output_text if record.output_text is not None else current.text
    if usual.text is not None and cur_text is not None:
        where[ev.K_DIFF_CHAR] = first_difference(usual.text, cur_text)
        where[ev.K_SIMILARITY] = similarity(usual.text, cur_text)
        where[ev.K_SIMILARITY_ESTIMATE] = False
    else:
        estimate = sketch_estimate(usual, current, cur_text, sketcher)
        if estimate is not None:
            where[ev.K_DIVERGENCE_AT], where[ev.K_SIMILARITY] = estimate
            where[ev.K_SIMILARITY_ESTIMATE] = True
    cur_tokens = record.output_token_list or current.tokens
    if usual.tokens is not None and cur_tokens is not None:
        where[ev.K_DIFF_TOKEN] = first_token_difference(usual.tokens, cur_tokens)
    how = ""
    if where[ev.K_DIFF_CHAR] is not None:
        how = f"; first differs at char {where[ev.K_DIFF_CHAR]}"
        how += f", similarity {where[ev.K_SIMILARITY]:.2f}"
    elif where[ev.K_DIVERGENCE_AT] is not None:
        how = (
            f"; first differs in chars {where[ev.K_DIVERGENCE_AT]}, "
            f"similarity ~{where[ev.K_SIMILARITY]:.2f} (estimated from sketches)"
        )
    how += _length_note(usual, current)
    if verdict is Verdict.KNOWN_VARIANT:
        name, level = ev.OUTPUT_VARIANT, "info"
        summary = (
            f"known variant of request {label}: seen {decision.output_count}x before, "
            f"one of {decision.distinct_outputs} answers (usual one {decision.usual_count}x)"
        )
    elif explained:
        name, level = ev.OUTPUT_DRIFT, "info"
        summary = (
            f"new answer for request {label} after the backend changed "
            f"({_backend_change(usual, record)}){how}; expected after a backend change"
        )
    else:
        name, level = ev.OUTPUT_DRIFT, decision.severity
        if is_noisy(known, repeats):
            summary = (
                f"new answer for request {label} on a backend known to vary "
                f"({known}/{repeats} repeat calls reproduced){how}"
            )
        else:
            summary = (
                f"new answer for request {label} under an unchanged backend "
                f"(fingerprint {record.system_fingerprint}): its usual answer was seen "
                f"{decision.usual_count}x{how}; {UNEXPLAINED_HINT}"
            )
    fields: dict[str, Any] = {
        ev.K_SUMMARY: summary,
        ev.K_VARIANT: VARIANT_LABELS[verdict],
        ev.K_EXPLAINED: explained,
        ev.K_REQUEST_LABEL: label,
        **base,
        ev.K_PREVIOUS_FINGERPRINT: usual.fingerprint,
        ev.K_PREVIOUS_BACKEND_ID: usual.backend_id,
        ev.K_PREVIOUS_OUTPUT_HASH: usual_hash,
        ev.K_PREVIOUS_OUTPUT_COUNT: usual.count,
        ev.K_PREVIOUS_OUTPUT_FIRST_SEEN: iso(usual.first_seen),
        ev.K_OUTPUT_COUNT: current.count,
        ev.K_DISTINCT_OUTPUTS: decision.distinct_outputs,
        ev.K_USUAL_OUTPUT_TOKENS: list(usual.length) if usual.length else None,
        ev.K_REPEAT_CALLS: repeats,
        ev.K_REPRO_RATE: round(known / repeats, 4) if repeats else None,
        **where,
    }
    if capture_content:
        fields[ev.K_PREVIOUS_OUTPUT_TEXT] = usual.text
        fields[ev.K_OUTPUT_TEXT] = cur_text
    return level, name, fields


def rate_change_fields(
    record: CallRecord, base: dict[str, Any], change: RateChange
) -> dict[str, Any]:
    """``seedlock.reproducibility_changed``: the old and new rate of the backend."""
    summary = (
        f"reproducibility of {record.model_key} under fingerprint {record.system_fingerprint} "
        f"dropped from {change.old_rate:.0%} to {change.new_rate:.0%} of repeat calls "
        f"(last {change.new_calls}); {UNEXPLAINED_HINT}"
    )
    return {
        ev.K_SUMMARY: summary,
        ev.K_MODEL_KEY: record.model_key,
        ev.K_REPRO_RATE: round(change.new_rate, 4),
        ev.K_REPRO_INTERVAL: [round(x, 4) for x in change.new_interval],
        ev.K_PREVIOUS_REPRO_RATE: round(change.old_rate, 4),
        ev.K_PREVIOUS_REPRO_INTERVAL: [round(x, 4) for x in change.old_interval],
        ev.K_REPEAT_CALLS: change.new_calls,
        **base,
    }


def backend_change_fields(
    record: CallRecord, change: tuple[dict[str, list[Any]], BackendIdentity]
) -> dict[str, Any]:
    """The fields of a backend change (``seedlock.backend_changed``, or added
    to ``seedlock.fingerprint_changed``): what changed, old -> new."""
    changed, previous = change
    what = ", ".join(
        f"{'fingerprint' if name == 'system_fingerprint' else name} {old} -> {new}"
        for name, (old, new) in changed.items()
    )
    current = record.identity
    return {
        ev.K_SUMMARY: (
            f"backend of {record.model_key} changed: {what}; new answers to known "
            "requests are expected (explained drift) until it settles"
        ),
        ev.K_CHANGED_FIELDS: changed,
        ev.K_PREVIOUS_BACKEND_ID: previous.id,
        ev.K_BACKEND: current.fields() if current is not None else None,
    }


def incomplete_summary(record: CallRecord) -> str:
    return (
        f"output of request {request_label(record)} ended without a finish reason "
        "(a cut stream?): not kept as a variant or a baseline"
    )


# -- the events of one call --------------------------------------------------------
_SAMPLING_KEYS: Final = (
    ("temperature", ev.K_TEMPERATURE),
    ("top_p", ev.K_TOP_P),
    ("max_tokens", ev.K_MAX_TOKENS),
)
# (level, event name, fields, whether the store keeps it)
Finding = tuple[str, str, dict[str, Any], bool]


def base_fields(record: CallRecord, backend: str | None = None) -> dict[str, Any]:
    """The keys every event about ``record`` carries (see docs/events.md)."""
    fields: dict[str, Any] = {
        ev.K_PROVIDER: record.provider,
        ev.K_REQUEST_MODEL: record.request_model,
        ev.K_RESPONSE_MODEL: record.response_model,
        ev.K_SEED: record.seed,
        ev.K_FINGERPRINT: record.system_fingerprint,
        ev.K_REQUEST_HASH: record.request_hash,
        ev.K_OUTPUT_HASH: record.output_hash,
        ev.K_BACKEND_ID: backend if backend is not None else record.backend_id,
        ev.K_LOCK_HASH: record.lock_hash,
        "run_id": record.run_id,
        "parent_run_id": record.parent_run_id,
    }
    if record.in_flight is not None:
        fields[ev.K_IN_FLIGHT] = record.in_flight
    slots = server_slots(record.identity)
    if slots is not None:
        fields[ev.K_SERVER_SLOTS] = slots
    if record.context:
        fields.update(record.context)
    return fields


def call_fields(
    record: CallRecord, base: Mapping[str, Any], d: CallDecision, *, capture_content: bool
) -> dict[str, Any]:
    """The fields of the ``seedlock.call`` line."""
    call = dict(base)
    for name, key in _SAMPLING_KEYS:
        if name in record.params:
            call[key] = record.params[name]
    call[ev.K_SERVICE_TIER] = record.service_tier
    call[ev.K_INPUT_TOKENS] = record.input_tokens
    call[ev.K_OUTPUT_TOKENS] = record.output_tokens
    if d.verdict is not None:
        call[ev.K_VARIANT] = VARIANT_LABELS[d.verdict.verdict]
    if capture_content:
        call[ev.K_PROMPT_TEXT] = record.prompt_text
        call[ev.K_OUTPUT_TEXT] = record.output_text
    return call


def event_names(d: CallDecision) -> list[str]:
    """The names of the events a decision fires, ``seedlock.call`` first."""
    names = [ev.CALL]
    if d.fingerprint_missing:
        names.append(ev.FINGERPRINT_MISSING)
    if d.fingerprint_changed is not None:
        names.append(ev.FINGERPRINT_CHANGED)
    elif d.backend_changed is not None:  # else that event is the one warning
        names.append(ev.BACKEND_CHANGED)
    if d.incomplete:
        names.append(ev.INCOMPLETE_OUTPUT)
    if d.rate_change is not None:
        names.append(ev.REPRODUCIBILITY_CHANGED)
    if d.compared is not None and d.verdict is not None:
        known = d.verdict.verdict is Verdict.KNOWN_VARIANT
        names.append(ev.OUTPUT_VARIANT if known else ev.OUTPUT_DRIFT)
    return names


def findings(
    record: CallRecord,
    base: Mapping[str, Any],
    d: CallDecision,
    *,
    capture_content: bool,
    sketcher: Sketcher | None,
) -> list[Finding]:
    """The events of a decision beyond ``seedlock.call`` (the change of rate
    after the variant that caused it)."""
    out: list[Finding] = []
    if d.fingerprint_missing:
        fields = {
            ev.K_PROVIDER: record.provider,
            ev.K_REQUEST_MODEL: record.request_model,
            ev.K_RESPONSE_MODEL: record.response_model,
            ev.K_MODEL_KEY: record.model_key,
            "run_id": record.run_id,
            **record.context,
        }
        out.append(("info", ev.FINGERPRINT_MISSING, fields, True))
    change = d.fingerprint_changed
    if change is not None:
        fields = {
            **base,
            ev.K_MODEL_KEY: record.model_key,
            ev.K_PREVIOUS_FINGERPRINT: change.previous,
            ev.K_PREVIOUS_FINGERPRINT_FIRST_SEEN: iso(change.previous_first_seen),
            ev.K_PREVIOUS_FINGERPRINT_LAST_SEEN: iso(change.previous_last_seen),
            ev.K_FINGERPRINT_FIRST_SEEN: iso(change.first_seen),
        }
        if d.backend_changed is not None:
            fields.update(backend_change_fields(record, d.backend_changed))
        out.append(("warning", ev.FINGERPRINT_CHANGED, fields, True))
    elif d.backend_changed is not None:
        fields = {
            **backend_change_fields(record, d.backend_changed),
            **base,
            ev.K_MODEL_KEY: record.model_key,
        }
        out.append(("warning", ev.BACKEND_CHANGED, fields, True))
    if d.incomplete:
        fields = {ev.K_SUMMARY: incomplete_summary(record), **base}
        out.append(("info", ev.INCOMPLETE_OUTPUT, fields, True))
    if d.compared is not None and d.verdict is not None:
        usual, usual_hash, current = d.compared
        level, name, fields = variant_event(
            record, dict(base), d.verdict, usual=usual, usual_hash=usual_hash,
            current=current, rate=d.rate, capture_content=capture_content, sketcher=sketcher,
        )  # fmt: skip
        # Known variants are counted in the store already.
        out.append((level, name, fields, name == ev.OUTPUT_DRIFT))
    if d.rate_change is not None:
        fields = rate_change_fields(record, dict(base), d.rate_change)
        out.append(("warning", ev.REPRODUCIBILITY_CHANGED, fields, True))
    return out


def violation_events(
    record_fields: Mapping[str, Any],
    violations: Sequence[Violation],
    *,
    lock_hash: str | None,
    source: str,
) -> list[tuple[str, dict[str, Any]]]:
    """(name, fields) of each observed difference from a lock: a missing seed is
    ``seedlock.unseeded_call``, any other one ``seedlock.lock_violation``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for v in violations:
        if v.field == "seed" and v.attempted is None:
            fields = {**record_fields, ev.K_LOCK_HASH: lock_hash, "source": source}
            fields["locked"] = v.locked
            out.append((ev.UNSEEDED_CALL, fields))
        else:
            fields = {
                **record_fields,
                "field": v.field,
                "locked": v.locked,
                "attempted": v.attempted,
                "source": source,
                "action": "observed",
                ev.K_LOCK_HASH: lock_hash,
            }
            out.append((ev.LOCK_VIOLATION, fields))
    return out
