"""LLM judges over HTTP: any OpenAI-compatible chat-completions server, and Anthropic's messages API;
each also through its provider's batch API (OpenAI Batch, Anthropic Message Batches), where a
wave is one job, answered within the provider's window at about half the price."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from cj_svc.judges.base import JobResults, JudgeError, JudgeRequest, Verdict
from cj_svc.judges.prompting import pair_message, parse_verdict, shared_prefix
from mesh_common.error_codes import ErrorCode
from mesh_common.pricing import Usage


def _status_error(code: int, detail: str) -> JudgeError:
    """The error of an HTTP status from the provider, for a call or for one item of a batch job."""
    detail = detail[:300]
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
    path = ""

    def __init__(self, base_url: str, api_key_env: str, default_model: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env, "")
        self.api_key_env = api_key_env
        self.default_model = default_model
        self.client = httpx.AsyncClient(timeout=timeout)

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        """The request body of one comparison."""
        raise NotImplementedError

    def verdict(self, answer: dict[str, Any], model: str) -> Verdict:
        """The verdict in a response body."""
        raise NotImplementedError

    async def compare(self, request: JudgeRequest) -> Verdict:
        model = request.model or self.default_model
        return self.verdict(await self._send("POST", self.path, json=self.body(request)), model)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the provider (a path under the base URL, or a full URL) that answered 200."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        try:
            response = await self.client.request(method, url, headers=self.headers(), **kwargs)
        except httpx.TimeoutException as error:
            raise JudgeError(ErrorCode.TIMEOUT, f"the provider did not answer in time: {error}") from None
        except httpx.HTTPError as error:
            raise JudgeError(ErrorCode.CONNECTION_ERROR, f"cannot reach {self.base_url}: {error}") from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.text)
        return response

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a call to the provider."""
        response = await self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise JudgeError(
                ErrorCode.PARSING_ERROR, f"the provider's answer is not JSON: {response.text[:200]}"
            ) from None

    async def _lines(self, path: str) -> list[dict[str, Any]]:
        """A JSONL file of the provider's, as its lines."""
        response = await self._call("GET", path)
        try:
            lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        except ValueError:
            raise JudgeError(ErrorCode.PARSING_ERROR, "the provider's batch results are not JSON lines") from None
        # A line that is no object answers nothing: its item counts as unanswered and is asked again.
        return [line for line in lines if isinstance(line, dict)]

    def _item(self, status: int, body: Any, model: str) -> Verdict | JudgeError:
        """One answered item of a batch job, as a direct call would have been read."""
        if status != 200:
            return _status_error(status, json.dumps(body))
        if not isinstance(body, dict):
            return JudgeError(ErrorCode.PARSING_ERROR, "the provider's batch item has no answer body")
        try:
            return self.verdict(body, model)
        except JudgeError as error:
            return error

    async def close(self) -> None:
        await self.client.aclose()


class OpenAIJudge(_HttpJudge):
    """Chat completions: OpenAI, vLLM, Ollama, llama.cpp servers (base URL + key + model)."""

    provider = "openai"
    path = "/chat/completions"
    ENDED = ("completed", "failed", "expired", "cancelled")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
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
        return body

    def verdict(self, answer: dict[str, Any], model: str) -> Verdict:
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                ErrorCode.PARSING_ERROR, "the provider's answer has no choices[0].message.content"
            ) from None
        return parse_verdict(text, answer.get("model", model), openai_usage(answer.get("usage")))

    async def submit_job(self, items: list[tuple[str, JudgeRequest]]) -> str:
        lines = "".join(
            json.dumps({"custom_id": custom_id, "method": "POST", "url": f"/v1{self.path}", "body": self.body(r)})
            + "\n"
            for custom_id, r in items
        )
        uploaded = await self._send(
            "POST", "/files", data={"purpose": "batch"}, files={"file": ("wave.jsonl", lines.encode())}
        )
        job = await self._send(
            "POST", "/batches",
            json={"input_file_id": uploaded["id"], "endpoint": f"/v1{self.path}", "completion_window": "24h"},
        )  # fmt: skip
        return str(job["id"])

    async def job_results(self, job_id: str, model: str) -> JobResults:
        job = await self._send("GET", f"/batches/{job_id}")
        status = job.get("status")
        if status not in self.ENDED:
            return JobResults(None)
        if status == "failed":  # the job was refused as a whole (its input did not validate)
            reason = json.dumps(job.get("errors"))[:300]
            return JobResults(
                {i: JudgeError(ErrorCode.INVALID_REQUEST, f"the provider refused the batch job: {reason}")
                 for i in await self._custom_ids(job)}
            )  # fmt: skip
        answers: dict[str, Verdict | JudgeError] = {}
        for file_id in (job.get("output_file_id"), job.get("error_file_id")):
            if not file_id:
                continue
            for line in await self._lines(f"/files/{file_id}/content"):
                response = line.get("response")
                if isinstance(response, dict):
                    answers[str(line.get("custom_id"))] = self._item(
                        _count(response.get("status_code")), response.get("body"), model
                    )
                else:
                    error = line.get("error") or {}
                    answers[str(line.get("custom_id"))] = JudgeError(
                        ErrorCode.EXTERNAL_SERVICE_ERROR, f"the provider could not answer: {error}", retryable=True
                    )
        return JobResults(answers)

    async def cancel_job(self, job_id: str) -> None:
        await self._send("POST", f"/batches/{job_id}/cancel")

    async def _custom_ids(self, job: dict[str, Any]) -> list[str]:
        return [str(line.get("custom_id")) for line in await self._lines(f"/files/{job['input_file_id']}/content")]


class AnthropicJudge(_HttpJudge):
    """Anthropic's messages API."""

    provider = "anthropic"
    path = "/messages"
    VERSION = "2023-06-01"
    # An item's error type -> (error code, worth asking again)
    ITEM_ERRORS = {
        "invalid_request_error": (ErrorCode.INVALID_REQUEST, False),
        "authentication_error": (ErrorCode.AUTHENTICATION_ERROR, False),
        "permission_error": (ErrorCode.AUTHENTICATION_ERROR, False),
        "rate_limit_error": (ErrorCode.RATE_LIMIT, True),
    }

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "anthropic-version": self.VERSION}

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
            "max_tokens": request.max_tokens or 400,
            # The shared part is marked for Anthropic's prompt cache (used from 1,024-4,096 tokens,
            # by model; shorter prefixes are simply not cached).
            "system": [{"type": "text", "text": shared_prefix(request), "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": pair_message(request)}],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def verdict(self, answer: dict[str, Any], model: str) -> Verdict:
        try:
            text = "".join(block["text"] for block in answer["content"] if block.get("type") == "text")
        except (KeyError, TypeError, AttributeError):
            raise JudgeError(ErrorCode.PARSING_ERROR, "the provider's answer has no text content") from None
        return parse_verdict(text, answer.get("model", model), anthropic_usage(answer.get("usage")))

    async def submit_job(self, items: list[tuple[str, JudgeRequest]]) -> str:
        job = await self._send(
            "POST", "/messages/batches",
            json={"requests": [{"custom_id": custom_id, "params": self.body(r)} for custom_id, r in items]},
        )  # fmt: skip
        return str(job["id"])

    async def job_results(self, job_id: str, model: str) -> JobResults:
        job = await self._send("GET", f"/messages/batches/{job_id}")
        if job.get("processing_status") != "ended":
            return JobResults(None)
        answers: dict[str, Verdict | JudgeError] = {}
        for line in await self._lines(job.get("results_url") or f"/messages/batches/{job_id}/results"):
            result = line.get("result")
            if not isinstance(result, dict):
                continue  # unanswered: asked again
            kind = result.get("type")
            if kind == "succeeded":
                answers[str(line.get("custom_id"))] = self._item(200, result.get("message"), model)
            elif kind == "errored":
                outer = result.get("error")
                error = outer.get("error") if isinstance(outer, dict) else None
                error = error if isinstance(error, dict) else {}
                code, retryable = self.ITEM_ERRORS.get(str(error.get("type")), (ErrorCode.EXTERNAL_SERVICE_ERROR, True))
                answers[str(line.get("custom_id"))] = JudgeError(
                    code, f"the provider could not answer: {error.get('message', '')}"[:300], retryable=retryable
                )
            # canceled or expired: left out, so asked again
        return JobResults(answers)

    async def cancel_job(self, job_id: str) -> None:
        await self._send("POST", f"/messages/batches/{job_id}/cancel")
