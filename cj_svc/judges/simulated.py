"""A simulated judge for tests and benchmarks: Bradley-Terry answers from latent true scores.

True scores come from a JSON file mapping the sha256 of an essay's text to its score, or, for texts
not in it, from a seeded hash of the text. P(Essay A wins) = (1 - lapse) * sigmoid(a - b + bias) +
lapse / 2. Latency and failures (by error code, at a rate) can be injected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from pathlib import Path

from cj_svc.judges.base import JudgeError, JudgeRequest, Verdict
from cj_svc.vocabulary import Winner
from mesh_common.error_codes import ErrorCode
from mesh_common.pricing import Usage


class SimulatedJudge:
    provider = "simulated"

    def __init__(
        self,
        seed: int = 0,
        scores_file: str = "",
        sd: float = 1.5,
        position_bias: float = 0.3,
        lapse: float = 0.03,
        latency_ms: float = 0.0,
        failure_rate: float = 0.0,
        failure_code: str = ErrorCode.RATE_LIMIT,
    ) -> None:
        self.seed = seed
        self.sd = sd
        self.true_scores: dict[str, float] = json.loads(Path(scores_file).read_text()) if scores_file else {}
        self.position_bias = position_bias
        self.lapse = lapse
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.failure_code = ErrorCode(failure_code)  # ValueError for a code the mesh does not know
        self.random = random.Random(seed)
        self.calls = 0

    def true_score(self, text: str) -> float:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in self.true_scores:
            return self.true_scores[digest]
        return random.Random(f"{self.seed}:{digest}").gauss(0, self.sd)

    async def compare(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.failure_rate and self.random.random() < self.failure_rate:
            raise JudgeError(self.failure_code, f"simulated {self.failure_code}")
        delta = self.true_score(request.essay_a) - self.true_score(request.essay_b) + self.position_bias
        p_a = (1 - self.lapse) / (1 + math.exp(-delta)) + self.lapse / 2
        a_wins = self.random.random() < p_a
        return Verdict(
            winner=Winner.ESSAY_A if a_wins else Winner.ESSAY_B,
            confidence=min(5, 1 + int(abs(delta))),
            justification="simulated judgement",
            model="simulated",
            usage=Usage(tokens_in=len(request.essay_a.split()) + len(request.essay_b.split()), tokens_out=5),
        )

    async def close(self) -> None:
        return None
