"""Costs from configured per-MTok prices: the arithmetic, the lookup by model name, and the
settings that carry the table (defaults, overrides, the round trip through the environment)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.ai.prices import ModelPrice, cost, price_for
from engine.ai.providers.base import Usage
from engine.config import DEFAULT_AI_PRICES, Settings, load_settings
from engine.errors import ConfigError

pytestmark = pytest.mark.unit

SONNET = ModelPrice(input=Decimal("3"), output=Decimal("15"), cache_write=Decimal("3.75"), cache_read=Decimal("0.30"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PARLO_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_cost_adds_the_four_kinds_of_token() -> None:
    usage = Usage(model="claude-sonnet-4-6", input_tokens=1_000, output_tokens=500, cache_write_tokens=4_000,
                  cache_read_tokens=0)
    assert cost(usage, SONNET) == Decimal("0.0255")  # 0.003 + 0.0075 + 0.015
    cached = Usage(model="claude-sonnet-4-6", input_tokens=1_000, output_tokens=500, cache_read_tokens=4_000)
    assert cost(cached, SONNET) == Decimal("0.0117")  # 0.003 + 0.0075 + 0.0012
    assert cost(Usage(model="x"), SONNET) == 0


def test_a_cache_hit_is_cheaper_than_sending_the_prefix_again() -> None:
    uncached = Usage(model="m", input_tokens=5_000, output_tokens=200)
    hit = Usage(model="m", input_tokens=1_000, output_tokens=200, cache_read_tokens=4_000)
    assert cost(hit, SONNET) < cost(uncached, SONNET)


def test_price_lookup_exact_then_longest_prefix_then_unknown() -> None:
    prices = {"claude-haiku-4-5": SONNET, "claude-haiku": ModelPrice(input=1, output=1, cache_write=1, cache_read=1)}
    assert price_for("claude-haiku-4-5", prices) is SONNET
    assert price_for("claude-haiku-4-5-20251001", prices) is SONNET
    assert price_for("claude-haiku-9", prices) is prices["claude-haiku"]
    assert price_for("claude-haiku-4-50", prices) is prices["claude-haiku"]  # not a dated 4-5
    assert price_for("gpt-unknown", prices) is None


def test_prices_refuse_negative_and_unknown_fields() -> None:
    with pytest.raises(ValueError):
        ModelPrice(input=Decimal("-1"), output=Decimal("1"), cache_write=Decimal("1"), cache_read=Decimal("1"))
    with pytest.raises(ValueError):
        ModelPrice.model_validate({"input": 1, "output": 1, "cache_write": 1, "cache_read": 1, "batch": 1})


def test_default_settings_price_every_default_tier_model() -> None:
    settings = load_settings()
    for tier in (settings.ai_router_model, settings.ai_answer_model, settings.ai_fallback_model):
        assert tier is not None
        assert price_for(tier.partition(":")[2], settings.ai_prices) is not None, tier
    assert settings.ai_prices == DEFAULT_AI_PRICES


def test_environment_adds_and_overrides_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLO_AI_PRICES", '{"qwen3:8b": {"input": 0, "output": 0, "cache_write": 0, "cache_read": 0},'
                                          ' "claude-haiku-4-5": {"input": 0.8, "output": 4, "cache_write": 1, "cache_read": 0.08}}')
    prices = load_settings().ai_prices
    assert prices["qwen3:8b"].output == 0
    assert prices["claude-haiku-4-5"].input == Decimal("0.8")
    assert prices["claude-sonnet-4-6"] == DEFAULT_AI_PRICES["claude-sonnet-4-6"]  # the rest stay


def test_the_price_of_a_web_search_is_configured_with_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLO_AI_PRICES", '{"claude-sonnet-4-6": {"input": 3, "output": 15, "cache_write": 3.75,'
                                          ' "cache_read": 0.3, "web_search": 0.012}}')
    prices = load_settings().ai_prices
    assert prices["claude-sonnet-4-6"].web_search == Decimal("0.012")
    assert prices["claude-haiku-4-5"].web_search == Decimal("0.01")  # the default: $10 per 1,000 searches
    usage = Usage(model="claude-sonnet-4-6", web_search_requests=3)
    assert cost(usage, prices["claude-sonnet-4-6"]) == Decimal("0.036")


def test_bad_prices_are_one_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLO_AI_PRICES", '{"m": {"input": "cheap", "output": 1, "cache_write": 1, "cache_read": 1}}')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "PARLO_AI_PRICES" in str(info.value)


def test_ai_settings_round_trip_through_the_environment_without_showing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(ai_anthropic_api_key="sk-ant-hunter2-123456", ai_fallback_model="openai:qwen3:8b",  # type: ignore[arg-type]
                        ai_openai_base_url="http://localhost:11434/v1")
    assert "hunter2" not in repr(original) and "hunter2" not in str(original)
    for key, value in original.env().items():
        monkeypatch.setenv(key, value)
    rebuilt = load_settings()
    assert rebuilt == original
    assert rebuilt.ai_anthropic_api_key is not None and rebuilt.ai_anthropic_api_key.get_secret_value() == "sk-ant-hunter2-123456"


@pytest.mark.parametrize("value", ["", "none", "None"])
def test_the_fallback_tier_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PARLO_AI_FALLBACK_MODEL", value)
    assert load_settings().ai_fallback_model is None


def test_a_tier_names_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLO_AI_ANSWER_MODEL", "claude-sonnet-4-6")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "PARLO_AI_ANSWER_MODEL" in str(info.value)


def test_the_factory_builds_a_chain_only_from_configured_providers() -> None:
    from engine.ai.providers.factory import chat_chain

    assert chat_chain(Settings()) is None  # no key anywhere: the offline responder's turn
    chain = chat_chain(Settings(ai_anthropic_api_key="k", ai_openai_api_key="o"))  # type: ignore[arg-type]
    assert chain is not None
    assert [(p.name, m) for p, m in chain.providers] == [("anthropic", "claude-haiku-4-5"), ("openai", "gpt-5.4-mini")]
    assert chat_chain(Settings(ai_anthropic_api_key="k"), "escalation") is None  # type: ignore[arg-type]  # off by default
    up = chat_chain(Settings(ai_anthropic_api_key="k", ai_openai_api_key="o",  # type: ignore[arg-type]
                             ai_escalation_model="anthropic:claude-sonnet-4-6"), "escalation")
    assert up is not None
    assert [(p.name, m) for p, m in up.providers] == [("anthropic", "claude-sonnet-4-6"), ("openai", "gpt-5.4-mini")]
    assert chat_chain(Settings(ai_anthropic_api_key="k", ai_escalation_model="none"), "escalation") is None  # type: ignore[arg-type]
    router = chat_chain(Settings(ai_anthropic_api_key="k", ai_fallback_model=None), "router")  # type: ignore[arg-type]
    assert router is not None and [(p.name, m) for p, m in router.providers] == [("anthropic", "claude-haiku-4-5")]
    local = chat_chain(Settings(ai_answer_model="openai:qwen3:8b", ai_openai_base_url="http://localhost:11434/v1",
                                ai_fallback_model=None))  # a local server needs no key
    assert local is not None and [m for _, m in local.providers] == ["qwen3:8b"]
