"""A local HTTP server that speaks the OpenAI chat-completions and Anthropic messages protocols as
the hosted providers do (their usage fields, prompt caching and batch APIs included), and judges
with the offline judge's essay scores, so a batch against it runs like one against a hosted LLM.

Batch jobs (OpenAI: a JSONL file uploaded to /files, then /batches; Anthropic: /messages/batches)
stay in progress while `hold` is set; items named in `fail_once` fail (retryably) in the first job
that holds them.

Tokens are counted its own way (words and punctuation marks), not with the runner's estimate.
Prompt caching follows the providers: a prefix is cached from 1,024 tokens, OpenAI reads it
without being asked (in steps of 128 tokens), Anthropic writes it on first use of a block marked
`cache_control` and reads it after.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cj_svc.judges.heuristic import SLOPE, draw, quality

CACHE_FROM_TOKENS = 1024


def tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


@dataclass
class Provider:
    url: str = ""
    calls: int = 0
    paths: list[str] = field(default_factory=list)
    cached_prefixes: set[str] = field(default_factory=set)
    scores: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # job id -> its custom ids, in order sent
    hold: bool = False
    fail_once: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)  # jobs the client asked to cancel
    down: bool = False  # every call answers 503, as a provider in an outage
    _job_bodies: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)
    _results: dict[str, list[dict]] = field(default_factory=dict)

    def new_job(self, items: list[tuple[str, dict]]) -> str:
        with self.lock:
            job_id = f"job_{len(self.jobs) + 1}"
            self.jobs[job_id] = [custom_id for custom_id, _ in items]
            self._job_bodies[job_id] = items
        return job_id

    def job_lines(self, job_id: str, answer, failure) -> list[dict] | None:
        """The job's result lines once it is released (None while held); computed once."""
        with self.lock:
            if self.hold:
                return None
            if job_id in self._results:
                return self._results[job_id]
            failing = {i for i, _ in self._job_bodies[job_id] if i in self.fail_once}
            self.fail_once -= failing
        lines = [failure(i) if i in failing else answer(i, body) for i, body in self._job_bodies[job_id]]
        with self.lock:
            self.calls += len(lines) - len(failing)
            self._results[job_id] = lines
        return lines

    def verdict(self, user: str) -> str:
        essay_a = user.split("## Essay A\n", 1)[1].split("\n\n## Essay B\n", 1)[0]
        essay_b = user.split("## Essay B\n", 1)[1].rsplit("\n\nWhich essay is better?", 1)[0]
        with self.lock:
            for text in (essay_a, essay_b):
                if text not in self.scores:
                    self.scores[text] = quality(text)[0]
        p_a = 1 / (1 + math.exp(-SLOPE * (self.scores[essay_a] - self.scores[essay_b])))
        winner = "Essay A" if draw(essay_a, essay_b) < p_a else "Essay B"
        return json.dumps({"winner": winner, "confidence": 3, "justification": f"{winner} argues its case better."})

    def cache(self, prefix: str) -> tuple[bool, int]:
        """(was the prefix cached before, its tokens); a prefix too short is never cached."""
        size = tokens(prefix)
        if size < CACHE_FROM_TOKENS:
            return False, size
        with self.lock:
            seen = prefix in self.cached_prefixes
            self.cached_prefixes.add(prefix)
        return seen, size

    def openai(self, body: dict) -> dict:
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        answer = self.verdict(user)
        seen, prefix = self.cache(system)
        return {
            "model": body["model"] + "-2024-07-18",
            "choices": [{"message": {"role": "assistant", "content": answer}}],
            "usage": {
                "prompt_tokens": prefix + tokens(user),
                "completion_tokens": tokens(answer),
                "prompt_tokens_details": {"cached_tokens": prefix // 128 * 128 if seen else 0},
            },
        }

    def anthropic(self, body: dict) -> dict:
        (block,) = body["system"]
        user = body["messages"][0]["content"]
        answer = self.verdict(user)
        marked = block.get("cache_control") == {"type": "ephemeral"}
        seen, prefix = self.cache(block["text"]) if marked else (False, tokens(block["text"]))
        cached = marked and prefix >= CACHE_FROM_TOKENS
        return {
            "model": body["model"],
            "content": [{"type": "text", "text": answer}],
            "usage": {
                "input_tokens": tokens(user) + (0 if cached else prefix),
                "output_tokens": tokens(answer),
                "cache_read_input_tokens": prefix if cached and seen else 0,
                "cache_creation_input_tokens": prefix if cached and not seen else 0,
            },
        }


def openai_line(state: Provider, custom_id: str, body: dict) -> dict:
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": state.openai(body)}, "error": None}


def openai_failure(custom_id: str) -> dict:
    return {"custom_id": custom_id, "response": {"status_code": 500, "body": {"error": {"message": "overloaded"}}}}


def anthropic_line(state: Provider, custom_id: str, params: dict) -> dict:
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": state.anthropic(params)}}


def anthropic_failure(custom_id: str) -> dict:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


@contextmanager
def provider_server() -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, payload: object, content_type: str = "application/json") -> None:
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def refused(self) -> bool:
            if state.down:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return state.down

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.refused():
                return
            with state.lock:
                state.paths.append(self.path)
            if self.path.endswith("/cancel"):  # either provider: stop a batch job
                job_id = self.path.split("/")[-2]
                state.cancelled.append(job_id)
                self.answer({"id": job_id, "status": "cancelling", "processing_status": "canceling"})
                return
            if self.path.endswith("/files"):  # OpenAI: the batch's input, multipart
                message = BytesParser(policy=default).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
                )
                (upload,) = [part for part in message.iter_parts() if part.get_filename()]
                file_id = f"file_{len(state.files) + 1}"
                state.files[file_id] = upload.get_payload(decode=True).decode()
                self.answer({"id": file_id, "purpose": "batch"})
                return
            body = json.loads(raw)
            if self.path.endswith("/batches") and "input_file_id" in body:  # OpenAI Batch
                lines = [json.loads(line) for line in state.files[body["input_file_id"]].splitlines()]
                job_id = state.new_job([(line["custom_id"], line["body"]) for line in lines])
                self.answer({"id": job_id, "status": "validating", "input_file_id": body["input_file_id"]})
                return
            if self.path.endswith("/messages/batches"):  # Anthropic Message Batches
                job_id = state.new_job([(r["custom_id"], r["params"]) for r in body["requests"]])
                self.answer({"id": job_id, "processing_status": "in_progress"})
                return
            with state.lock:
                state.calls += 1
            self.answer(state.openai(body) if self.path.endswith("/chat/completions") else state.anthropic(body))

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.refused():
                return
            parts = self.path.strip("/").split("/")
            if parts[-1] == "content":  # OpenAI: a file
                self.answer(state.files[parts[-2]], "application/jsonl")
            elif parts[-2:-1] == ["batches"] and parts[-3] != "messages":  # OpenAI: a batch
                job_id = parts[-1]
                lines = state.job_lines(job_id, lambda i, b: openai_line(state, i, b), openai_failure)
                if lines is None:
                    self.answer({"id": job_id, "status": "in_progress"})
                    return
                output = "".join(json.dumps(line) + "\n" for line in lines if line["response"]["status_code"] == 200)
                errors = "".join(json.dumps(line) + "\n" for line in lines if line["response"]["status_code"] != 200)
                state.files[f"{job_id}_out"], state.files[f"{job_id}_err"] = output, errors
                self.answer({"id": job_id, "status": "completed", "output_file_id": f"{job_id}_out",
                             "error_file_id": f"{job_id}_err" if errors else None})  # fmt: skip
            elif parts[-1] == "results":  # Anthropic: a batch's results
                lines = state.job_lines(parts[-2], lambda i, b: anthropic_line(state, i, b), anthropic_failure)
                self.answer("".join(json.dumps(line) + "\n" for line in lines or []), "application/jsonl")
            else:  # Anthropic: a batch
                job_id = parts[-1]
                ended = state.job_lines(job_id, lambda i, b: anthropic_line(state, i, b), anthropic_failure)
                self.answer({"id": job_id, "processing_status": "in_progress" if ended is None else "ended",
                             "results_url": f"{state.url}/messages/batches/{job_id}/results"})  # fmt: skip

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
