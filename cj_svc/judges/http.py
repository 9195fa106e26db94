"""LLM judges over HTTP: any OpenAI-compatible chat-completions server, and Anthropic's messages API."""

from __future__ import annotations

import os
from typing import Any

import httpx

from cj_svc.judges.base import JudgeError, JudgeRequest, Verdict
from cj_svc.judges.prompting import pair_message, parse_verdict, shared_prefix
from mesh_common.error_codes import ErrorCode
from mesh_common.pricing import Usage


def _status_error(response: httpx.Response) -> JudgeError:
    code = response.status_code
    detail = response.text[:300]
    if code == 429:
        return JudgeError(ErrorCode.RATE_LIMIT, f"rate limited (HTTP 429): {detail}")
    if code in (401, 403):
        return JudgeError(ErrorCode.AUTHENTICATION_ERROR, f"the provider refused the API key (HTTP {code}): {detail}")
    if code >= 500:
        return JudgeError(ErrorCode.EXTERNAL_SERVICE_ERROR, f"provider error (HTTP {code}): {detail}", retryable=True)
    return JudgeError(ErrorCode.INVALID_REQUEST, f"the provider refused the request (HTTP {code}): {detail}")


def _count(value: Any) -> int:
    """A token count from a provider's answer; anything but a non-negative integer counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def openai_usage(usage: Any) -> Usage | None:
    """Chat completions' usage: prompt_tokens include the cached ones
    (prompt_tokens_details.cached_tokens)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    return Usage(
        tokens_in=_count(usage.get("prompt_tokens")),
        tokens_out=_count(usage.get("completion_tokens")),
        tokens_cached=_count(details.get("cached_tokens")) if isinstance(details, dict) else 0,
    )


def anthropic_usage(usage: Any) -> Usage | None:
    """Messages' usage: input_tokens exclude the tokens read from and written to the prompt cache."""
    if not isinstance(usage, dict):
        return None
    read, written = _count(usage.get("cache_read_input_tokens")), _count(usage.get("cache_creation_input_tokens"))
    return Usage(
        tokens_in=_count(usage.get("input_tokens")) + read + written,
        tokens_out=_count(usage.get("output_tokens")),
        tokens_cached=read,
        tokens_cache_written=written,
    )


class _HttpJudge:
    provider = ""

    def __init__(self, base_url: str, api_key_env: str, default_model: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env, "")
        self.api_key_env = api_key_env
        self.default_model = default_model
        self.client = httpx.AsyncClient(timeout=timeout)

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self.client.post(f"{self.base_url}{path}", json=body, headers=headers)
        except httpx.TimeoutException as error:
            raise JudgeError(ErrorCode.TIMEOUT, f"the provider did not answer in time: {error}") from None
        except httpx.HTTPError as error:
            raise JudgeError(ErrorCode.CONNECTION_ERROR, f"cannot reach {self.base_url}: {error}") from None
        if response.status_code != 200:
            raise _status_error(response)
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            raise JudgeError(
                ErrorCode.PARSING_ERROR, f"the provider's answer is not JSON: {response.text[:200]}"
            ) from None
        return answer

    async def close(self) -> None:
        await self.client.aclose()


class OpenAIJudge(_HttpJudge):
    """Chat completions: OpenAI, vLLM, Ollama, llama.cpp servers (base URL + key + model)."""

    provider = "openai"

    async def compare(self, request: JudgeRequest) -> Verdict:
        model = request.model or self.default_model
        body: dict[str, Any] = {
            "model": model,
            # The shared part first: OpenAI caches prompt prefixes (of 1,024 tokens or more) itself.
            "messages": [
                {"role": "system", "content": shared_prefix(request)},
                {"role": "user", "content": pair_message(request)},
            ],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        answer = await self._post("/chat/completions", body, headers)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                ErrorCode.PARSING_ERROR, "the provider's answer has no choices[0].message.content"
            ) from None
        return parse_verdict(text, answer.get("model", model), openai_usage(answer.get("usage")))


class AnthropicJudge(_HttpJudge):
    """Anthropic's messages API."""

    provider = "anthropic"
    VERSION = "2023-06-01"

    async def compare(self, request: JudgeRequest) -> Verdict:
        model = request.model or self.default_model
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or 400,
            # The shared part is marked for Anthropic's prompt cache (used from 1,024-4,096 tokens,
            # by model; shorter prefixes are simply not cached).
            "system": [{"type": "text", "text": shared_prefix(request), "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": pair_message(request)}],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        headers = {"x-api-key": self.api_key, "anthropic-version": self.VERSION}
        answer = await self._post("/messages", body, headers)
        try:
            text = "".join(block["text"] for block in answer["content"] if block.get("type") == "text")
        except (KeyError, TypeError):
            raise JudgeError(ErrorCode.PARSING_ERROR, "the provider's answer has no text content") from None
        return parse_verdict(text, answer.get("model", model), anthropic_usage(answer.get("usage")))
