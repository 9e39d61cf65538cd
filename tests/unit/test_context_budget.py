"""Which retrieved passages a model's answer is given (`worth_sending`) and the setting that
chooses the share."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from engine.ai.pipeline import worth_sending
from engine.config import Settings

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Hit:
    name: str
    score: float


RANKED = [Hit("a", 0.9), Hit("b", 0.6), Hit("c", 0.45), Hit("d", 0.44), Hit("e", 0.1)]


def test_passages_below_the_share_of_the_best_are_left_out_and_the_order_is_kept() -> None:
    assert [h.name for h in worth_sending(RANKED, 0.5)] == ["a", "b", "c"]  # 0.45 is exactly half: kept
    assert [h.name for h in worth_sending(RANKED, 0.7)] == ["a"]


def test_a_zero_share_sends_everything_and_nothing_found_sends_nothing() -> None:
    assert worth_sending(RANKED, 0.0) == RANKED
    assert worth_sending([], 0.5) == []
    assert worth_sending([Hit("only", 0.0)], 0.5) == [Hit("only", 0.0)]  # the best is always sent


def test_the_share_is_a_setting_between_zero_and_one(tmp_path) -> None:
    assert Settings(home=tmp_path).ai_context_share == 0.5
    assert Settings(home=tmp_path, ai_context_share=0).ai_context_share == 0
    for wrong in (-0.1, 1.5, "half"):
        with pytest.raises(ValidationError):
            Settings(home=tmp_path, ai_context_share=wrong)
