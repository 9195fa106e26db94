"""Judgements kept for reuse: a paid judge is not asked twice for the same answer.

An answer is reused when everything it depends on is the same: both texts (by sha256) in the same
order, the judge's provider, model, temperature and answer length, the system prompt, the task,
the rubric, and the version of how judges are asked. Within a batch, a pair asked again (only
once every pair has been asked) is a new question: the key counts how often the batch asked it.
With tokens on, answers are reused only among the same user's batches: whether a pair was judged
before would otherwise tell one user what another submitted.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.judges.base import JudgeRequest, Verdict
from cj_svc.judges.prompting import PROMPT_VERSION
from cj_svc.models import Judgement
from cj_svc.vocabulary import Winner

# Paid judges only: the offline judges answer at once, for nothing.
REUSED_PROVIDERS = frozenset({"openai", "anthropic"})


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def judgement_key(provider: str, request: JudgeRequest, occurrence: int, owner: str) -> str:
    """sha256 of what the judge's answer to `request` depends on, for batches of `owner` (a user;
    '' on an open mesh); `occurrence` counts earlier asks of the same ordered pair in the same
    batch (0 for the first)."""
    parts = {
        "owner": owner,
        "version": PROMPT_VERSION, "provider": provider, "model": request.model,
        "temperature": request.temperature, "max_tokens": request.max_tokens,
        "system_prompt": request.system_prompt, "prompt": request.prompt, "instructions": request.instructions,
        "essay_a": text_sha256(request.essay_a), "essay_b": text_sha256(request.essay_b), "occurrence": occurrence,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Judgements:
    """The stored answers, read by key; written with the comparison that paid for them (see
    `workflow.store.Recorder`), so only answers that were recorded are ever reused."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def find(self, key: str) -> Verdict | None:
        async with self.sessions() as session:
            found = (
                await session.execute(select(Judgement).where(Judgement.judgement_key == key))
            ).scalar_one_or_none()
        if found is None:
            return None
        return Verdict(Winner(found.winner), found.confidence, found.justification, found.model)
