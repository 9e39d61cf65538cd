"""How settings reach actors and replicas.

Non-secret settings travel as constructor arguments. Secrets (external database and Redis URLs)
travel only as environment variables of the worker process: inherited from the raylet when
`parlo up` starts Ray, or set through ``runtime_env`` when the caller passes external URLs to a
cluster it did not start. Embedded services need neither: their passwords are read from the
credentials file under ``PARLO_HOME``.
"""

from __future__ import annotations

from typing import Any

from engine.config import Settings

SECRET_FIELDS = ("database_url", "redis_url", "secret_key", "jwt_secret", "ai_anthropic_api_key", "ai_openai_api_key",
                 "ai_voyage_api_key")


def public_settings(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.model_dump(mode="json").items() if k not in SECRET_FIELDS and v is not None}


def secret_runtime_env(settings: Settings) -> dict[str, Any]:
    env = {f"PARLO_{name.upper()}": getattr(settings, name).get_secret_value()
           for name in SECRET_FIELDS if getattr(settings, name) is not None}
    return {"env_vars": env} if env else {}
