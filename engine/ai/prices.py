"""What a model call costs, from prices kept in configuration (``PARLO_AI_PRICES``), never in code.

Prices are USD per million tokens for the four ways a token is billed: plain input, output, input
written to the prompt cache, input read from it; and USD per web search, which providers bill
apart from tokens (Anthropic: $10 per 1,000 searches). A :class:`~engine.ai.providers.base.Usage`
already splits its tokens that way and counts its searches, so the cost is five products and a
sum, in ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from engine.ai.providers.base import Usage

MTOK = Decimal(1_000_000)
WEB_SEARCH_USD = Decimal("0.01")  # Anthropic's web search: $10 per 1,000 searches


class ModelPrice(BaseModel):
    """USD per million tokens. ``cache_write`` is the 5-minute cache write; providers that
    charge nothing extra for it (OpenAI) set it equal to ``input``. ``web_search``: USD per search
    the provider ran for the call. ``cache_min_tokens``: the shortest prefix the provider caches
    for this model (a shorter one is billed as plain input, silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)
    web_search: Decimal = Field(default=WEB_SEARCH_USD, ge=0)
    cache_min_tokens: int = Field(default=1024, ge=0)


def cost(usage: Usage, price: ModelPrice) -> Decimal:
    """USD for one call."""
    total = (usage.input_tokens * price.input + usage.output_tokens * price.output
             + usage.cache_write_tokens * price.cache_write + usage.cache_read_tokens * price.cache_read)
    return total / MTOK + usage.web_search_requests * price.web_search


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: an exact entry, else the longest entry the name starts with
    (``claude-haiku-4-5`` prices ``claude-haiku-4-5-20251001``), else None (unknown: say so, don't guess)."""
    exact = prices.get(model)
    if exact is not None:
        return exact
    matches = [name for name in prices if model.startswith(name + "-") or model.startswith(name + "@")]
    return prices[max(matches, key=len)] if matches else None
