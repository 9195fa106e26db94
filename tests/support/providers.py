"""A local HTTP server that speaks the OpenAI chat-completions and Anthropic messages protocols as
the hosted providers do (their usage fields and prompt caching included), and judges with the
offline judge's essay scores, so a batch against it runs like one against a hosted LLM.

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


@contextmanager
def provider_server() -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.calls += 1
                state.paths.append(self.path)
            answer = state.openai(body) if self.path.endswith("/chat/completions") else state.anthropic(body)
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
