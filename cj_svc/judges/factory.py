"""One judge per provider, configured from the service's settings."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from cj_svc.judges.base import BatchJudge, Judge
from cj_svc.judges.heuristic import HeuristicJudge
from cj_svc.judges.http import AnthropicJudge, OpenAIJudge
from cj_svc.judges.simulated import SimulatedJudge
from cj_svc.settings import CJSettings
from mesh_common.pricing import DEFAULT_MODELS

PROVIDERS = ("heuristic", "simulated", "openai", "anthropic")
# The providers whose judges also take a wave as one job of their batch API.
BATCH_API_PROVIDERS = frozenset({"openai", "anthropic"})
# The hosted APIs answer nothing without a key; a self-hosted OpenAI-compatible server may need none.
HOSTED = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


class Judges:
    """Creates each provider's judge on first use and keeps it (HTTP clients are pooled)."""

    def __init__(self, settings: CJSettings) -> None:
        self.settings = settings
        self._judges: dict[str, Judge] = {}

    def unusable(self, provider: str) -> str | None:
        """Why this service cannot judge with `provider` (None when it can): checked before a batch
        is accepted, so that a missing key is not found out comparison by comparison."""
        if provider not in PROVIDERS:
            return f"unknown judge provider {provider!r}; use one of {', '.join(PROVIDERS)}"
        if provider not in HOSTED:
            return None
        s = self.settings
        base_url, key_env = (
            (s.openai_base_url, s.openai_api_key_env)
            if provider == "openai"
            else (s.anthropic_base_url, s.anthropic_api_key_env)
        )
        if urlparse(base_url).hostname == HOSTED[provider] and not os.environ.get(key_env):
            return (
                f"the {provider} judge needs an API key, and {key_env} is not set where this CJ Service runs; "
                f"set it (or --{provider}-api-key-env) and restart the service, or choose another judge provider"
            )
        return None

    def model(self, provider: str, batch_model: str) -> str:
        """The model a batch's comparisons are asked of (empty for the offline judges)."""
        return batch_model or self.settings.judge_model or DEFAULT_MODELS.get(provider, "")

    def batch_api(self, provider: str) -> BatchJudge:
        """The provider's judge, for its batch API (openai and anthropic only: see `unusable`)."""
        judge = self.get(provider)
        if provider not in BATCH_API_PROVIDERS or not isinstance(judge, AnthropicJudge | OpenAIJudge):
            raise ValueError(f"the {provider} judge has no batch API")
        return judge

    def get(self, provider: str) -> Judge:
        if provider not in self._judges:
            self._judges[provider] = self._make(provider)
        return self._judges[provider]

    def _make(self, provider: str) -> Judge:
        s = self.settings
        if provider == "heuristic":
            return HeuristicJudge()
        if provider == "simulated":
            return SimulatedJudge(
                seed=s.simulated_seed,
                scores_file=s.simulated_scores_file,
                latency_ms=s.simulated_latency_ms,
                failure_rate=s.simulated_failure_rate,
                failure_code=s.simulated_failure_code,
            )
        if provider == "openai":
            return OpenAIJudge(
                s.openai_base_url,
                s.openai_api_key_env,
                s.judge_model or DEFAULT_MODELS["openai"],
                s.judge_timeout_seconds,
            )
        if provider == "anthropic":
            return AnthropicJudge(
                s.anthropic_base_url,
                s.anthropic_api_key_env,
                s.judge_model or DEFAULT_MODELS["anthropic"],
                s.judge_timeout_seconds,
            )
        raise ValueError(f"unknown judge provider {provider!r}; use one of {', '.join(PROVIDERS)}")

    async def close(self) -> None:
        for judge in self._judges.values():
            await judge.close()
