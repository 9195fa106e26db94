"""The CJ Service's settings: one object; each field is a `cj-svc serve` flag and a CJ_SVC_*
environment variable (see mesh_server.cli.serve_command)."""

from __future__ import annotations

from dataclasses import dataclass

from mesh_common.error_codes import ErrorCode
from mesh_common.tls import TlsFiles
from mesh_server.settings import ServiceSettings, setting


@dataclass(frozen=True)
class CJSettings(ServiceSettings):
    listen: str = setting("127.0.0.1:50052", "host:port to serve on (port 0 picks one)")
    database_url: str = setting("sqlite:///var/cj/cj.db", "sqlite:///path or postgresql://user@host/db")
    # How this service reaches the Content Service.
    content_address: str = setting(
        "127.0.0.1:50051",
        "the Content Service's host:port (replicas: host:port,host:port or dns:///name:port)",
    )
    content_tls_ca: str = setting("", "PEM CA of the Content Service's certificate: reach it over TLS")
    content_tls_cert: str = setting("", "PEM client certificate for the Content Service (mutual TLS)")
    content_tls_key: str = setting("", "PEM key of --content-tls-cert")
    content_token: str = setting("", "bearer token for the Content Service (prefer --content-token-file)")
    content_token_file: str = setting("", "file whose first line is the Content Service's bearer token")
    # Judge defaults; a batch's request may override provider, model, temperature, max tokens, prompt.
    judge_provider: str = setting("heuristic", "heuristic (offline), simulated, openai or anthropic")
    judge_model: str = setting("", "the provider's model; empty: the provider's default")
    judge_temperature: float = setting(0.0, "sampling temperature of LLM judges")
    judge_max_tokens: int = setting(400, "most tokens an LLM judge may answer with")
    judge_timeout_seconds: float = setting(60.0, "seconds to wait for one judge call")
    openai_base_url: str = setting("https://api.openai.com/v1", "any OpenAI-compatible server")
    openai_api_key_env: str = setting("OPENAI_API_KEY", "environment variable holding the OpenAI key")
    anthropic_base_url: str = setting("https://api.anthropic.com/v1", "the Anthropic API")
    anthropic_api_key_env: str = setting("ANTHROPIC_API_KEY", "environment variable holding the Anthropic key")
    batch_poll_seconds: float = setting(30.0, "how often a provider's batch job is polled (batch mode)")
    price_table: str = setting("", "TOML file of judge prices per million tokens; empty: the shipped table")
    max_attempts: int = setting(4, "judge calls per comparison before it fails (retryable errors only)")
    retry_base_seconds: float = setting(0.5, "first backoff between judge attempts; doubled each time")
    # The simulated judge (tests and benches): Bradley-Terry on true scores, with injected failures.
    simulated_latency_ms: float = setting(0.0, "simulated judge: milliseconds per call")
    simulated_failure_rate: float = setting(0.0, "simulated judge: share of calls that fail")
    simulated_failure_code: str = setting(ErrorCode.RATE_LIMIT, "simulated judge: the error code of a failure")
    simulated_seed: int = setting(0, "simulated judge: random seed")
    simulated_scores_file: str = setting("", "simulated judge: JSON file of text sha256 -> true score")
    # Batches
    target_reliability: float = setting(0.9, "SSR at which a batch stops, when it sets none (0.5 to 0.99)")
    default_budget_per_essay: int = setting(12, "a batch's comparison budget, when it sets none, per essay")
    batch_concurrency: int = setting(32, "judge calls in flight per batch")
    service_concurrency: int = setting(128, "judge calls in flight in all")
    replica_id: str = setting("", "this replica's id, distinct per replica on one database; default: host name")
    lease_seconds: float = setting(30.0, "a batch whose replica stops renewing its lease is taken over after this")

    @property
    def content_tls(self) -> TlsFiles:
        return TlsFiles(self.content_tls_cert, self.content_tls_key, self.content_tls_ca)
