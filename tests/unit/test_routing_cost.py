"""The routing benchmark's cost model (bench/routing.py): what routing saves against sending every
message to the large model, and how escalating failed answers eats into it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.routing import TokenModel, measured_contexts, modelled_cost
from engine.config import DEFAULT_AI_PRICES


def test_every_message_to_the_large_model_saves_nothing_and_fixed_words_cost_nothing() -> None:
    t = TokenModel()
    same = modelled_cost(["knowledge"] * 4, [False] * 4, prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                         answer_model="claude-opus-4-7", large_model="claude-opus-4-7", t=TokenModel(system=0))
    assert same["saving"] == pytest.approx(0.0)
    declined = modelled_cost(["out_of_scope", "handoff"], [False, False], prices=DEFAULT_AI_PRICES,
                             router_model="claude-haiku-4-5", answer_model="claude-haiku-4-5",
                             large_model="claude-opus-4-7", t=t)
    assert declined["routed_usd"] == 0.0 and declined["saving"] == 1.0


def test_escalation_shares_cost_in_proportion_and_the_largest_share_meeting_the_aim_is_exact() -> None:
    handlers = ["knowledge"] * 80 + ["chitchat"] * 10 + ["out_of_scope"] * 10
    c = modelled_cost(handlers, [i % 7 == 0 for i in range(100)], prices=DEFAULT_AI_PRICES,
                      router_model="claude-haiku-4-5", answer_model="claude-haiku-4-5", large_model="claude-opus-4-7",
                      escalation_model="claude-sonnet-4-6", escalation_shares=(0.0, 0.1, 0.2), aim=0.80)
    by = c["by_escalation_share"]
    assert by["0.00"] == pytest.approx(c["saving"], abs=1e-4) and by["0.00"] > by["0.10"] > by["0.20"]
    assert by["0.00"] - by["0.10"] == pytest.approx(by["0.10"] - by["0.20"], abs=2e-4)  # linear in the share
    at_limit = modelled_cost(handlers, [i % 7 == 0 for i in range(100)], prices=DEFAULT_AI_PRICES,
                             router_model="claude-haiku-4-5", answer_model="claude-haiku-4-5",
                             large_model="claude-opus-4-7", escalation_model="claude-sonnet-4-6",
                             escalation_shares=(c["max_share_for_aim"],))
    assert 0 < c["max_share_for_aim"] < 1
    assert next(iter(at_limit["by_escalation_share"].values())) == pytest.approx(0.80, abs=1e-3)
    # an aim the routed cost misses even without escalation leaves no share at all
    assert modelled_cost(handlers, [False] * 100, prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                         answer_model="claude-haiku-4-5", large_model="claude-opus-4-7",
                         escalation_model="claude-sonnet-4-6", aim=0.99)["max_share_for_aim"] == 0.0


def test_a_prefix_shorter_than_the_model_cache_minimum_is_billed_as_plain_input() -> None:
    cached = modelled_cost(["chitchat"], [False], prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                           answer_model="claude-sonnet-4-6", large_model="claude-opus-4-7", t=TokenModel(system=2000))
    short = modelled_cost(["chitchat"], [False], prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                          answer_model="claude-haiku-4-5", large_model="claude-opus-4-7", t=TokenModel(system=2000))
    # Sonnet caches 2,000 tokens (read at $0.30/MTok); Haiku 4.5 needs 4,096 and bills them at $1/MTok
    assert cached["routed_usd"] == pytest.approx((25 * 3 + 2000 * 0.30 + 40 * 15) / 1e6)
    assert short["routed_usd"] == pytest.approx((2025 * 1 + 40 * 5) / 1e6)


def test_an_unpriced_model_stops_the_benchmark_with_its_name() -> None:
    with pytest.raises(SystemExit, match="no price configured for mystery-model"):
        modelled_cost(["knowledge"], [False], prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                      answer_model="mystery-model", large_model="claude-opus-4-7")


def test_fewer_documents_in_our_prompt_than_in_the_naive_one_are_billed_as_such() -> None:
    c = modelled_cost(["knowledge"], [False], prices=DEFAULT_AI_PRICES, router_model="claude-haiku-4-5",
                      answer_model="claude-haiku-4-5", large_model="claude-opus-4-7",
                      t=TokenModel(documents=1000, baseline_documents=1300))
    # Haiku 4.5 $1/$5, Opus 4.7 $5/$25 per MTok; 600 system tokens are below both cache minimums
    assert c["routed_usd"] == pytest.approx(((600 + 1000 + 25) * 1 + 150 * 5) / 1e6)
    assert c["baseline_usd"] == pytest.approx(((600 + 1300 + 25) * 5 + 150 * 25) / 1e6)
    assert c["tokens"] == {"documents": 1000, "baseline_documents": 1300}


def test_measured_contexts_come_from_the_retrieval_report_and_a_missing_one_gives_none(tmp_path: Path) -> None:
    report = tmp_path / "retrieval.json"
    report.write_text(json.dumps({"sets": {
        "faq": {"context": {"top": {"tokens_mean": 1331.4}, "0.50": {"tokens_mean": 1104.2}}},
        "old": {"methods": {}},  # a report from before the measurement: skipped
    }}))
    assert measured_contexts(report, 0.5) == {"faq": TokenModel(documents=1104, baseline_documents=1331)}
    assert measured_contexts(report, 0.0) == {"faq": TokenModel(documents=1331, baseline_documents=1331)}
    assert measured_contexts(report, 0.7) == {}  # a share it did not measure
    assert measured_contexts(tmp_path / "missing.json", 0.5) == {}
    report.write_text("{not json")
    assert measured_contexts(report, 0.5) == {}
