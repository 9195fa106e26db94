"""How fast the offline judge answers: comparisons per second over 500-word essays.

200 essays (the examples/eng5 texts, each cut to 500 words and given its own last sentence), then
10,000 comparisons of random pairs through `HeuristicJudge.compare`, as the workflow calls it. Each
essay's features are computed once, on its first comparison; the figure includes that. Then the time
to score one 1 MiB text (the judge must not grow quadratic on hostile sizes).
Run: .venv/bin/python bench/judge_speed.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cj_svc.judges.base import JudgeRequest  # noqa: E402
from cj_svc.judges.heuristic import HeuristicJudge, quality  # noqa: E402

ESSAYS, COMPARISONS, WORDS = 200, 10_000, 500


def essays() -> list[str]:
    texts = sorted((ROOT / "examples" / "eng5").glob("*/*.txt"))
    words = [p.read_text().split() for p in texts]
    return [" ".join((words[i % len(words)] * 3)[:WORDS]) + f" This is essay number {i}." for i in range(ESSAYS)]


async def main() -> None:
    texts = essays()
    prompt = (ROOT / "examples" / "eng5" / "prompt.md").read_text()
    rng = random.Random(1)
    pairs = [rng.sample(range(ESSAYS), 2) for _ in range(COMPARISONS)]
    judge = HeuristicJudge()
    started = time.perf_counter()
    for a, b in pairs:
        await judge.compare(JudgeRequest(essay_a=texts[a], essay_b=texts[b], prompt=prompt))
    elapsed = time.perf_counter() - started
    first = time.perf_counter()
    fresh = HeuristicJudge()
    for text in texts[:50]:
        await fresh.compare(JudgeRequest(essay_a=text, essay_b=text, prompt=prompt))
    per_essay = (time.perf_counter() - first) / 50
    huge = (" ".join(texts) * 200)[: 1 << 20]  # a 1 MiB text, as hostile a size as the contract allows
    started = time.perf_counter()
    quality(huge, prompt)
    huge_seconds = time.perf_counter() - started
    print(f"{COMPARISONS} comparisons of {ESSAYS} {WORDS}-word essays in {elapsed:.2f} s: "
          f"{COMPARISONS / elapsed:,.0f} comparisons per second (features once per essay: {1000 * per_essay:.1f} ms); "
          f"a 1 MiB text scored in {huge_seconds:.2f} s")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
