"""The OpenAI-compatible and Anthropic judges against a local HTTP server speaking their APIs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cj_svc.judges.base import JudgeError, JudgeRequest
from cj_svc.judges.http import AnthropicJudge, OpenAIJudge
from cj_svc.vocabulary import Winner
from mesh_common.pricing import Usage

GOOD = json.dumps({"winner": "Essay B", "confidence": 4, "justification": "B argues better." + "x" * 600})


class Provider:
    """Answers with the scripted (status, body) pairs in turn and records the requests."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append({"path": self.path, **json.loads(body)})
            state.headers.append(dict(self.headers))
            status, payload = state.script.pop(0)
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.requests.append({"path": self.path})
            status, payload = state.script.pop(0)
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def openai_answer(content: str) -> str:
    return json.dumps(
        {
            "model": "local-model",
            "choices": [{"message": {"content": content}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 64}},
        }
    )


def anthropic_answer(content: str) -> str:
    return json.dumps(
        {
            "model": "claude-x",
            "content": [{"type": "text", "text": content}],
            "usage": {
                "input_tokens": 90,
                "output_tokens": 20,
                "cache_read_input_tokens": 1500,
                "cache_creation_input_tokens": 0,
            },
        }
    )


REQUEST = JudgeRequest(essay_a="First essay.", essay_b="Second essay.", prompt="Describe a place.",
                       instructions="Rubric.", model="m1", temperature=0.0, max_tokens=300)  # fmt: skip


async def test_openai_good_answer_and_request_shape(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    state.script = [(200, openai_answer(GOOD))]
    judge = OpenAIJudge(url, "TEST_OPENAI_KEY", "default-model", 5)
    verdict = await judge.compare(REQUEST)
    await judge.close()
    assert (verdict.winner, verdict.confidence) == (Winner.ESSAY_B, 4)
    assert verdict.usage == Usage(tokens_in=120, tokens_out=30, tokens_cached=64)  # cached: part of prompt_tokens
    assert len(verdict.justification) == 500
    sent = state.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["model"] == "m1"
    assert sent["temperature"] == 0.0 and sent["max_tokens"] == 300  # 0.0 is sent, not dropped
    assert state.headers[0]["Authorization"] == "Bearer sk-test"
    # The shared part (role, task, rubric, answer format) is a stable prefix; the essays come last.
    system, user = sent["messages"][0]["content"], sent["messages"][1]["content"]
    assert "Describe a place." in system and "Rubric." in system and "JSON" in system
    assert "Essay" not in system.split("JSON")[0] and "First essay." not in system
    assert user.index("First essay.") < user.index("Second essay.")


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (429, '{"error": "slow down"}', "RATE_LIMIT", True),
        (401, '{"error": "bad key"}', "AUTHENTICATION_ERROR", False),
        (503, "upstream down", "EXTERNAL_SERVICE_ERROR", True),
        (200, openai_answer("I think the first one, probably."), "PARSING_ERROR", False),
        (200, "not json at all", "PARSING_ERROR", False),
    ],
    ids=["429", "401", "503", "prose instead of JSON", "malformed body"],
)
async def test_openai_errors_classified(provider, status: int, body: str, code: str, retryable: bool) -> None:
    state, url = provider
    state.script = [(status, body)]
    judge = OpenAIJudge(url, "NO_SUCH_KEY_ENV", "m", 5)
    with pytest.raises(JudgeError) as caught:
        await judge.compare(REQUEST)
    await judge.close()
    assert caught.value.error_code == code and caught.value.retryable is retryable


async def test_anthropic_good_answer_and_errors(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "ak-test")
    state.script = [(200, anthropic_answer(GOOD)), (429, "{}"), (401, "{}"), (200, anthropic_answer("{broken"))]
    judge = AnthropicJudge(url, "TEST_ANTHROPIC_KEY", "claude-default", 5)
    verdict = await judge.compare(REQUEST)
    assert (verdict.winner, verdict.model) == (Winner.ESSAY_B, "claude-x")
    # Anthropic's input_tokens exclude the cache's: the usage counts all input, the cached as a part.
    assert verdict.usage == Usage(tokens_in=1590, tokens_out=20, tokens_cached=1500, tokens_cache_written=0)
    system = state.requests[0]["system"]
    assert system[-1]["cache_control"] == {"type": "ephemeral"} and "Rubric." in system[-1]["text"]
    assert "First essay." not in system[-1]["text"] and "First essay." in state.requests[0]["messages"][0]["content"]
    assert state.requests[0]["path"] == "/v1/messages" and state.headers[0]["x-api-key"] == "ak-test"
    assert state.headers[0]["anthropic-version"] == "2023-06-01"
    for expected in ("RATE_LIMIT", "AUTHENTICATION_ERROR", "PARSING_ERROR"):
        with pytest.raises(JudgeError) as caught:
            await judge.compare(REQUEST)
        assert caught.value.error_code == expected
    await judge.close()


async def test_openai_judge_in_a_batch_retries_429_and_records_parse_errors(provider, mesh, monkeypatch) -> None:
    """Through the whole workflow: the OpenAI-compatible judge behind a local server."""
    from huleedu.cj.v1 import assessment_pb2
    from huleedu.common.v1 import common_pb2

    from tests.support.cj import store_texts, submit_request, watch_to_end

    state, url = provider
    answers = (
        [(429, "{}")]
        + [(200, openai_answer(GOOD))] * 3
        + [(200, openai_answer("no idea"))]
        + [(200, openai_answer(GOOD))] * 20
    )
    state.script = answers
    await mesh.restart_cj(judge_provider="openai", openai_base_url=url, batch_concurrency=1)
    storage_ids = await store_texts(mesh.content, ["essay one", "essay two", "essay three", "essay four"])
    request = submit_request(storage_ids, comparison_budget=6)
    request.judge.temperature = 0.0
    submitted = await mesh.assessment.SubmitBatch(request)
    final = await watch_to_end(mesh, submitted.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
    page = await mesh.assessment.ListComparisons(assessment_pb2.ListComparisonsRequest(batch_id=final.batch_id))
    assert any(c.attempts == 2 for c in page.comparisons)  # the 429, retried
    assert [c.error_code for c in page.comparisons].count(common_pb2.ERROR_CODE_PARSING_ERROR) == 1
    assert all(r.get("temperature") == 0.0 for r in state.requests)


def jsonl(*lines) -> str:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)


async def test_batch_job_results_survive_hostile_lines(provider) -> None:
    """What a provider's batch results may hold besides answers: each item is an answer, an error
    (retryable or not), or left out (asked again); nothing crashes the batch."""
    state, url = provider
    good = json.loads(openai_answer(GOOD))
    state.script = [
        (200, json.dumps({"id": "b1", "status": "in_progress"})),
        (200, json.dumps({"id": "b1", "status": "completed", "output_file_id": "out", "error_file_id": "err"})),
        (200, jsonl({"custom_id": "c1", "response": {"status_code": 200, "body": good}}, "[1, 2]", "null",
                    {"custom_id": "c2", "response": {"status_code": 200, "body": "not an object"}},
                    {"custom_id": "c3", "response": {"status_code": "two hundred"}},
                    {"custom_id": "c4", "response": {"status_code": 200, "body": {"choices": [{"message": {"content": 7}}]}}})),
        (200, jsonl({"custom_id": "c5", "response": {"status_code": 503, "body": {"error": "busy"}}},
                    {"custom_id": "c6", "response": None, "error": {"code": "batch_expired"}})),
    ]  # fmt: skip
    judge = OpenAIJudge(url, "NO_SUCH_KEY_ENV", "m", 5)
    assert (await judge.job_results("b1", "m")).answers is None  # still running
    answers = (await judge.job_results("b1", "m")).answers
    await judge.close()
    assert answers["c1"].winner == Winner.ESSAY_B
    assert {i: (a.error_code, a.retryable) for i, a in answers.items() if i != "c1"} == {
        "c2": ("PARSING_ERROR", False), "c3": ("INVALID_REQUEST", False), "c4": ("PARSING_ERROR", False),
        "c5": ("EXTERNAL_SERVICE_ERROR", True), "c6": ("EXTERNAL_SERVICE_ERROR", True),
    }  # fmt: skip

    message = json.loads(anthropic_answer(GOOD))
    state.script = [
        (200, json.dumps({"id": "m1", "processing_status": "ended", "results_url": f"{url}/messages/batches/m1/results"})),
        (200, jsonl({"custom_id": "a1", "result": {"type": "succeeded", "message": message}},
                    {"custom_id": "a2", "result": {"type": "errored", "error": "flat string"}},
                    {"custom_id": "a3", "result": {"type": "errored",
                                                   "error": {"error": {"type": "invalid_request_error"}}}},
                    {"custom_id": "a4", "result": {"type": "expired"}}, {"custom_id": "a5", "result": 5},
                    {"custom_id": "a6", "result": {"type": "succeeded", "message": {"content": [3, None]}}})),
    ]  # fmt: skip
    judge = AnthropicJudge(url, "NO_SUCH_KEY_ENV", "c", 5)
    answers = (await judge.job_results("m1", "c")).answers
    await judge.close()
    assert answers["a1"].winner == Winner.ESSAY_B
    assert {i: (a.error_code, a.retryable) for i, a in answers.items() if i != "a1"} == {
        "a2": ("EXTERNAL_SERVICE_ERROR", True),
        "a3": ("INVALID_REQUEST", False),
        "a6": ("PARSING_ERROR", False),
    }  # a4 (expired) and a5 (no result) are left out: asked again
