"""The CJ Service's settings: one object, filled from flags or CJ_SVC_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from mesh_common.error_codes import ErrorCode
from mesh_common.tls import TlsFiles


@dataclass(frozen=True)
class CJSettings:
    listen: str = "127.0.0.1:50052"
    database_url: str = "sqlite:///var/cj/cj.db"
    content_address: str = "127.0.0.1:50051"
    metrics_listen: str = ""
    migrate: bool = False
    log_json: bool = False
    log_level: str = "INFO"
    grace_seconds: float = 5.0
    # `<sha256>:role+role[:user],...`; empty: no authentication (say so at start; bind to loopback).
    tokens: str = ""
    # TLS: this server's certificate and key (PEM); a client CA makes it mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # How this service reaches the Content Service: the CA it trusts, its own certificate and key
    # (mutual TLS), and its bearer token.
    content_tls_ca: str = ""
    content_tls_cert: str = ""
    content_tls_key: str = ""
    content_token: str = ""
    # Judge defaults; a batch's request may override provider, model, temperature, max tokens, prompt.
    judge_provider: str = "heuristic"
    judge_model: str = ""
    judge_temperature: float = 0.0
    judge_max_tokens: int = 400
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key_env: str = "OPENAI_API_KEY"
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    anthropic_api_key_env: str = "ANTHROPIC_API_KEY"
    judge_timeout_seconds: float = 60.0
    # simulated judge: latency per call, failure rate and the error code it injects
    simulated_latency_ms: float = 0.0
    simulated_failure_rate: float = 0.0
    simulated_failure_code: str = ErrorCode.RATE_LIMIT
    simulated_seed: int = 0
    # JSON file: sha256 of an essay's text -> its true score
    simulated_scores_file: str = ""
    default_budget_per_essay: int = 12
    batch_concurrency: int = 32
    service_concurrency: int = 128
    max_attempts: int = 4
    retry_base_seconds: float = 0.5
    replica_id: str = ""
    lease_seconds: float = 30.0

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

    @property
    def content_tls(self) -> TlsFiles:
        return TlsFiles(self.content_tls_cert, self.content_tls_key, self.content_tls_ca)
