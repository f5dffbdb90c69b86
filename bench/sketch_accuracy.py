"""How well do output sketches tell the size of a change, on real model outputs?

    .venv/bin/python bench/sketch_accuracy.py [--prompts 6] [--max-tokens 110]
        [--threads 1] [--outputs outputs.json]

Generates, with the real local model (llama.cpp + SmolLM2-135M, started by
`LocalServer`), 12 outputs per prompt (66 pairs) (temperature 0 to 1.2, different seeds:
from near-copies to unrelated answers), sketches each with one random key,
and compares every pair of outputs of the same prompt:

- the estimated similarity (`estimate_similarity`) with the exact Jaccard of
  the 3-word shingle sets: budget |estimate - exact| <= 0.1 for >= 95 % of
  the pairs;
- the divergence bucket (`divergence_bucket`) with the true first
  difference: budget, always inside.

A: every two distinct answers to one prompt (the model's own drift: with
this small model, answers part early). B: late drifts in the estimated
regime: two answers joined (over `MINHASH_K` shingles), against the same
text whose end, from 10 % to 97 % of its length on, is another pair's
(similarities over the whole range, all text from the model).

Also the sketch size and the CPU cost of sketching a ~200-token output (a
new key: no word hash cached; and words seen before).
``--outputs`` keeps the generated texts in a JSON file (after each prompt)
and reuses them.
Budgets are reported (PASS/MISS); the exit code is 1 on a MISS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_seedlock._drift_events import first_difference
from langchain_seedlock._sketch import (
    MINHASH_K,
    Sketcher,
    divergence_bucket,
    estimate_similarity,
    jaccard,
    new_key,
    shingles,
)

PROMPTS = [
    "Tell a short story about a lighthouse keeper.",
    "Explain why the sky is blue.",
    "Describe a busy market in the morning.",
    "Write a letter to a friend about a trip to the mountains.",
    "What are the benefits of regular exercise?",
    "Describe how bread is made.",
    "Tell a story about a cat who learns to swim.",
    "Explain how a bicycle works.",
    "Write about a rainy day in a small town.",
    "What makes a good teacher?",
    "Describe the life of a honey bee.",
    "Tell a story about a robot who wants to paint.",
    "Explain what a computer does.",
    "Describe a walk through a forest in autumn.",
    "Why do people keep gardens?",
    "Write about a child's first day at school.",
    "Explain how rain forms.",
    "Tell a story about a lost key.",
    "Describe a train journey across the country.",
    "What is the importance of sleep?",
    "Write about an old bookshop.",
    "Explain how plants grow from seeds.",
    "Tell a story about two friends building a boat.",
    "Describe a winter evening at home.",
    "What do astronauts do in space?",
    "Write about a festival in a village.",
    "Explain why we need clean water.",
    "Tell a story about a dragon who is afraid of the dark.",
    "Describe a sunrise over the sea.",
    "What makes music enjoyable?",
]
# (temperature, seed) per output of a prompt. One seed at rising temperatures:
# the same random draws, so answers part later the closer the temperatures
# (near-copies to unrelated); a second seed for answers that part early.
SETTINGS = [
    (0.0, 1), (0.1, 1), (0.2, 1), (0.3, 1), (0.4, 1), (0.5, 1),
    (0.6, 1), (0.8, 1), (0.3, 2), (0.6, 2), (0.9, 2), (1.2, 2),
]  # fmt: skip
BINS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0), (1.0, 1.01)]


def generate(n_prompts: int, max_tokens: int, threads: int, keep: Path | None) -> list[list[str]]:
    """The outputs per prompt; with ``keep``, saved after each prompt and
    resumed from (the local model's own outputs, nothing from a hub)."""
    from langchain_openai import ChatOpenAI

    from langchain_seedlock import LocalServer

    out: list[list[str]] = []
    if keep is not None and keep.exists():
        out = json.loads(keep.read_text())
    if len(out) >= n_prompts:
        return out[:n_prompts]
    with LocalServer(slots=1, cache_prompt=False, threads=threads) as server:
        for prompt in PROMPTS[len(out) : n_prompts]:
            texts = []
            for temperature, seed in SETTINGS:
                model = ChatOpenAI(
                    base_url=server.base_url, api_key="none", model="x",  # type: ignore[arg-type]
                    seed=seed, temperature=temperature, max_tokens=max_tokens,
                )  # fmt: skip
                texts.append(str(model.invoke(prompt).content))
            out.append(texts)
            if keep is not None:
                keep.write_text(json.dumps(out))
            print(f"  generated {len(out)}/{n_prompts}", file=sys.stderr, flush=True)
    return out


def cost_us(texts: list[str]) -> tuple[float, float, int]:
    """(cold, warm) CPU microseconds (this thread's, so other processes on a
    busy machine do not count) to sketch a ~200-token text, and its length."""
    words: list[str] = []
    for t in itertools.chain(texts, texts):
        words += t.split()
        if len(words) >= 150:
            break
    text = " ".join(words[:150])  # ~200 tokens
    n = 300
    cold = []
    for _ in range(n):
        s = Sketcher(new_key())
        t0 = time.thread_time()
        s.sketch(text)
        cold.append(time.thread_time() - t0)
    s = Sketcher(new_key())
    s.sketch(text)
    t0 = time.thread_time()
    for _ in range(n):
        s.sketch(text)
    warm = (time.thread_time() - t0) / n
    return sum(cold) / n * 1e6, warm * 1e6, len(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=110)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--outputs", type=Path, default=None)
    args = parser.parse_args()
    groups = generate(args.prompts, args.max_tokens, args.threads, args.outputs)
    sketcher = Sketcher(new_key())
    sizes: list[int] = []
    real = [compare(sketcher, a, b, sizes) for texts in groups for a, b in pairs(texts)]
    print(f"A. real pairs: every two distinct answers to one prompt ({len(groups)} prompts "
          f"x {len(SETTINGS)} answers)")  # fmt: skip
    ok_a = table(real)
    spliced = [compare(sketcher, a, b, sizes) for texts in groups for a, b in splices(texts)]
    print("\nB. late drifts on long answers: two answers joined (~150 words, over "
          f"{MINHASH_K} shingles: the estimated regime), against the same text whose end, "
          "from 10 % to 97 % of its length on, is another pair's")  # fmt: skip
    ok_b = table(spliced)
    cold, warm, chars = cost_us([t for g in groups for t in g])
    print(f"\nsketch size: median {statistics.median(sizes):.0f} bytes, max {max(sizes)}")
    print(
        f"sketch cost, CPU time ({chars} chars, 150 words): new key {cold:.0f} us, "
        f"words seen before {warm:.0f} us"
    )
    return 0 if ok_a and ok_b else 1


Row = tuple[float, float, int, tuple[int, int], bool]


def pairs(texts: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in itertools.combinations(texts, 2) if a != b]


def splices(texts: list[str]) -> list[tuple[str, str]]:
    out = []
    n = len(texts)
    for i in range(n):
        a = f"{texts[i]} {texts[(i + 1) % n]}"
        other = f"{texts[(i + 2) % n]} {texts[(i + 3) % n]}"
        for frac in (0.1, 0.3, 0.5, 0.7, 0.9, 0.97):
            cut = a.rfind(" ", 0, int(len(a) * frac)) + 1
            b = a[:cut] + other[other.find(" ", int(len(other) * frac)) + 1 :]
            if a != b:
                out.append((a, b))
    return out


def compare(sketcher: Sketcher, a: str, b: str, sizes: list[int]) -> Row:
    ka, kb = sketcher.sketch(a), sketcher.sketch(b)
    sizes += [len(ka), len(kb)]
    sa, sb = shingles(a), shingles(b)
    return (
        jaccard(sa, sb),
        estimate_similarity(ka, kb),
        first_difference(a, b),
        divergence_bucket(ka, kb),
        len(sa) <= MINHASH_K and len(sb) <= MINHASH_K,
    )


def table(rows: list[Row]) -> bool:
    """Print the accuracy table of ``rows``; whether both budgets hold."""
    print(f"{len(rows)} pairs; both shingle sets whole in the sketch (exact): "
          f"{sum(r[4] for r in rows)}\n")  # fmt: skip
    print("| exact Jaccard | pairs | estimated | mean abs error | max abs error | within 0.1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for lo, hi in BINS:
        sel = [r for r in rows if lo <= r[0] < hi]
        if sel:
            print(_line("1.0" if lo == 1.0 else f"[{lo:.1f}, {hi:.1f})", sel))
    print(_line("all", rows))
    errs = [abs(r[1] - r[0]) for r in rows]
    within = sum(e <= 0.1 for e in errs) / len(errs)
    inside = sum(r[3][0] <= r[2] < r[3][1] for r in rows)
    widths = [r[3][1] - r[3][0] for r in rows]
    print(f"\ndivergence bucket holds the first difference: {inside}/{len(rows)} "
          f"(width median {statistics.median(widths):.0f} chars, max {max(widths)})")  # fmt: skip
    ok_sim, ok_bucket = within >= 0.95, inside == len(rows)
    print(f"{'PASS' if ok_sim else 'MISS'}  |estimate - exact| <= 0.1 for {within:.1%} (>= 95%)")
    print(f"{'PASS' if ok_bucket else 'MISS'}  bucket holds the first difference: "
          f"{inside}/{len(rows)}")  # fmt: skip
    return ok_sim and ok_bucket


def _line(label: str, sel: list[Row]) -> str:
    errs = [abs(r[1] - r[0]) for r in sel]
    est = sum(not r[4] for r in sel)
    within = sum(e <= 0.1 for e in errs) / len(errs)
    return (
        f"| {label} | {len(sel)} | {est} | {statistics.mean(errs):.3f} | "
        f"{max(errs):.3f} | {within:.1%} |"
    )


if __name__ == "__main__":
    sys.exit(main())
