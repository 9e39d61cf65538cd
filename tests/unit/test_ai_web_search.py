"""The sites a tenant lets the assistant search: hostnames checked (and hostile lists refused with
a readable reason), a stored value that is not valid turning web search off, the sites crossing the
Ray boundary with the rest of an AskRequest, and searches priced per search."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from engine.ai.drafts import request_as_dict, request_from_dict
from engine.ai.pipeline import AskRequest
from engine.ai.prices import ModelPrice, cost
from engine.ai.providers.base import ChatMessage, Usage
from engine.ai.web_search import MAX_DOMAINS, SETTING, check_domains, tenant_domains
from engine.config import DEFAULT_AI_PRICES
from engine.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_hostnames_are_kept_lower_case_ascii_and_once() -> None:
    assert check_domains(["Ottica-Blu.IT", "shop.fornitore.example.com.", "ottica-blu.it", " münchen.de "]) == (
        "ottica-blu.it", "shop.fornitore.example.com", "xn--mnchen-3ya.de")
    assert check_domains([]) == ()


@pytest.mark.parametrize(("value", "reason"), [
    ("https://ottica-blu.it/negozio", "is a URL: give the site's hostname only (ottica-blu.it)"),
    ("ottica-blu.it/negozio", "has a path: give the site's hostname only (ottica-blu.it)"),
    ("ottica-blu.it?utm=1", "has a path"),
    ("*.ottica-blu.it", "has a wildcard: a hostname already includes its subdomains"),
    ("ottica-blu.it:8443", "no port"),
    ("mario@ottica-blu.it", "not a hostname"),
    ("ottica blu.it", "not a hostname"),
    ("192.168.1.10", "is an IP address"),
    ("localhost", "not a website's hostname"),
    ("ottica..it", "not a hostname"),
    ("-ottica.it", "not a hostname"),
    ("x" * 64 + ".it", "not a hostname"),
    (".".join(["abcdefghij"] * 26) + ".it", "not a hostname"),  # 289 characters
    ("   ", "an empty hostname"),
    (42, "a number is not a hostname"),
    (None, "null is not a hostname"),
    (["ottica.it"], "a list is not a hostname"),
    ({"host": "ottica.it"}, "a mapping is not a hostname"),
    (True, "a boolean is not a hostname"),
])
def test_anything_but_a_hostname_is_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_domains(["ottica.it", value])
    assert reason in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_hostile_lists_are_refused_whole_and_briefly() -> None:
    with pytest.raises(InvalidInput, match=f"at most {MAX_DOMAINS} sites, not 1000"):
        check_domains([f"sito{i}.it" for i in range(1000)])
    with pytest.raises(InvalidInput, match="expected a list of hostnames, not a string"):
        check_domains("ottica.it")
    with pytest.raises(InvalidInput, match="expected a list of hostnames, not a mapping"):
        check_domains({"ottica.it": True})
    many_bad = [f"https://sito{i}.it/" for i in range(10)]
    with pytest.raises(InvalidInput) as info:
        check_domains(many_bad)
    message = str(info.value)
    assert message.count("is a URL") == 3 and message.endswith("; and 7 more")
    assert check_domains([f"sito{i}.it" for i in range(MAX_DOMAINS)])[-1] == f"sito{MAX_DOMAINS - 1}.it"


def test_a_stored_value_that_is_not_valid_turns_web_search_off() -> None:
    assert tenant_domains({}) == ()
    assert tenant_domains({SETTING: None}) == ()
    assert tenant_domains({SETTING: ["ottica.it", "WWW.Fornitore.it"]}) == ("ottica.it", "www.fornitore.it")
    for hostile in ("ottica.it", ["https://ottica.it"], ["*"], [1, 2], {"a": 1}, ["x.it"] * 1000, True):
        assert tenant_domains({SETTING: hostile}, uuid.uuid4()) == (), hostile


def test_the_sites_cross_the_ray_boundary_with_the_request() -> None:
    request = AskRequest(uuid.uuid4(), "orari?", conversation_id=uuid.uuid4(), history=[ChatMessage("user", "ciao")],
                         business="Ottica Blu", business_facts="Bologna", purpose="draft", failures=1, language="it",
                         web_search_domains=("ottica-blu.it", "fornitore.example.com"))
    again = request_from_dict(request_as_dict(request))
    assert again == request and again.web_search_domains == ("ottica-blu.it", "fornitore.example.com")
    assert request_as_dict(request)["web_search_domains"] == ["ottica-blu.it", "fornitore.example.com"]
    older = request_as_dict(request)
    del older["web_search_domains"]  # a request from a replica that predates the field
    assert request_from_dict(older).web_search_domains == ()


def test_a_web_search_costs_its_price_on_top_of_the_tokens() -> None:
    sonnet = DEFAULT_AI_PRICES["claude-sonnet-4-6"]
    assert sonnet.web_search == Decimal("0.01")  # Anthropic: $10 per 1,000 searches
    tokens_only = Usage(model="claude-sonnet-4-6", input_tokens=1_000, output_tokens=500)
    searched = Usage(model="claude-sonnet-4-6", input_tokens=1_000, output_tokens=500, web_search_requests=2)
    assert cost(searched, sonnet) - cost(tokens_only, sonnet) == Decimal("0.02")
    cheaper = ModelPrice.model_validate({"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3,
                                         "web_search": "0.005"})
    assert cost(searched, cheaper) == cost(tokens_only, cheaper) + Decimal("0.010")
    with pytest.raises(ValueError):
        ModelPrice.model_validate({"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3, "web_search": -1})
