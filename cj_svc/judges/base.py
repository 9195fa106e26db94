"""The one judge interface, its request and answer, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cj_svc.vocabulary import Winner
from mesh_common.error_codes import ErrorCode
from mesh_common.pricing import Usage

JUSTIFICATION_MAX = 500

# Error codes worth retrying with backoff; others are recorded and the batch goes on.
RETRYABLE_CODES = frozenset(
    {ErrorCode.RATE_LIMIT, ErrorCode.TIMEOUT, ErrorCode.CONNECTION_ERROR, ErrorCode.SERVICE_UNAVAILABLE}
)


@dataclass(frozen=True)
class JudgeRequest:
    essay_a: str
    essay_b: str
    prompt: str = ""  # what the students were asked to write
    instructions: str = ""  # the rubric / assessment instructions
    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str = ""


@dataclass(frozen=True)
class Verdict:
    winner: Winner
    confidence: int  # 1..5
    justification: str
    model: str = ""
    usage: Usage | None = None  # None: the judge reports no tokens (offline judges)


class JudgeError(Exception):
    def __init__(self, error_code: ErrorCode, message: str, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.retryable = error_code in RETRYABLE_CODES if retryable is None else retryable


class Judge(Protocol):
    provider: str

    async def compare(self, request: JudgeRequest) -> Verdict: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class JobResults:
    """A batch job's outcome: None while the provider works on it; else each item's verdict or
    error, by custom id (items missing from it were not answered: expired or cancelled)."""

    answers: dict[str, Verdict | JudgeError] | None


class BatchJudge(Judge, Protocol):
    """A judge that also takes comparisons as one job of its provider's batch API."""

    async def submit_job(self, items: list[tuple[str, JudgeRequest]]) -> str:
        """Send (custom id, request) pairs as one job; the provider's job id."""
        ...

    async def job_results(self, job_id: str, model: str) -> JobResults: ...

    async def cancel_job(self, job_id: str) -> None: ...
