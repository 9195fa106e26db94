"""What LLM judges are asked, and how their answers are read."""

from __future__ import annotations

import json
import re

from cj_svc.judges.base import JUSTIFICATION_MAX, JudgeError, JudgeRequest, Verdict
from cj_svc.vocabulary import Winner
from mesh_common.error_codes import ErrorCode
from mesh_common.pricing import Usage

DEFAULT_SYSTEM_PROMPT = (
    "You are an experienced teacher assessing student essays by comparative judgement. "
    "Compare the two essays holistically against the task and the assessment instructions, and "
    "decide which one is better. Ignore the order in which they are shown."
)

ANSWER_FORMAT = (
    'Answer with JSON only: {"winner": "Essay A" or "Essay B", "confidence": an integer 1-5, '
    f'"justification": at most {JUSTIFICATION_MAX} characters}}.'
)


# Part of every judgement's cache key: a change to what judges are asked must change it.
PROMPT_VERSION = "cj-pairwise-2"


def shared_prefix(request: JudgeRequest) -> str:
    """What every comparison of a batch is told first, the same for all its pairs: the role, the
    task, the rubric and the answer format. Sent as a stable prefix, so that providers' prompt
    caches (Anthropic's cache_control, OpenAI's automatic prefix caching) bill it cheaper."""
    parts = [request.system_prompt or DEFAULT_SYSTEM_PROMPT]
    if request.prompt:
        parts.append(f"## The task the students were given\n{request.prompt.strip()}")
    if request.instructions:
        parts.append(f"## Assessment instructions\n{request.instructions.strip()}")
    parts.append(ANSWER_FORMAT)
    return "\n\n".join(parts)


def pair_message(request: JudgeRequest) -> str:
    """What differs between comparisons: the two essays, in their order."""
    return "\n\n".join(
        [
            f"## Essay A\n{request.essay_a.strip()}",
            f"## Essay B\n{request.essay_b.strip()}",
            "Which essay is better? Answer with the JSON described above.",
        ]
    )


def parse_verdict(text: str, model: str = "", usage: Usage | None = None) -> Verdict:
    """Read the judge's JSON answer; anything else is a PARSING_ERROR (not retried)."""
    if not isinstance(text, str):
        raise JudgeError(ErrorCode.PARSING_ERROR, f"the judge's answer is not text: {type(text).__name__}")
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        answer = json.loads(match.group(0) if match else text)
        winner = str(answer["winner"]).strip().upper().removeprefix("ESSAY").strip()
        confidence = int(answer.get("confidence", 3))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise JudgeError(ErrorCode.PARSING_ERROR, f"the judge's answer is not the expected JSON: {error}") from None
    if winner not in ("A", "B"):
        raise JudgeError(
            ErrorCode.PARSING_ERROR, f"the judge named no winner ('Essay A' or 'Essay B'): {answer['winner']!r}"
        )
    return Verdict(
        winner=Winner.ESSAY_A if winner == "A" else Winner.ESSAY_B,
        confidence=min(5, max(1, confidence)),
        justification=str(answer.get("justification", ""))[:JUSTIFICATION_MAX],
        model=model,
        usage=usage,
    )
