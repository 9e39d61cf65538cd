"""What a model call costs, from prices kept in configuration (``PARLO_AI_PRICES``), never in code.

Prices are USD per million tokens for the four ways a token is billed: plain input, output, input
written to the prompt cache, input read from it. A :class:`~engine.ai.providers.base.Usage`
already splits its tokens that way, so the cost is four products and a sum, in ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from engine.ai.providers.base import Usage

MTOK = Decimal(1_000_000)


class ModelPrice(BaseModel):
    """USD per million tokens. ``cache_write`` is the 5-minute cache write; providers that
    charge nothing extra for it (OpenAI) set it equal to ``input``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)


def cost(usage: Usage, price: ModelPrice) -> Decimal:
    """USD for one call."""
    total = (usage.input_tokens * price.input + usage.output_tokens * price.output
             + usage.cache_write_tokens * price.cache_write + usage.cache_read_tokens * price.cache_read)
    return total / MTOK


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: an exact entry, else the longest entry the name starts with
    (``claude-haiku-4-5`` prices ``claude-haiku-4-5-20251001``), else None (unknown: say so, don't guess)."""
    exact = prices.get(model)
    if exact is not None:
        return exact
    matches = [name for name in prices if model.startswith(name + "-") or model.startswith(name + "@")]
    return prices[max(matches, key=len)] if matches else None
