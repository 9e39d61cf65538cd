"""Pure parts of the inbox: template parameters, @mentions, request parsing and cursors."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from engine.errors import InvalidInput, NotFound
from engine.inbox import inputs, templates_view
from engine.inbox.messages import SendRequest, TextSend
from engine.inbox.notes import mentioned_local_parts

pytestmark = pytest.mark.unit

COMPONENTS = [{"type": "HEADER", "format": "TEXT", "text": "Ordine {{1}}"},
              {"type": "BODY", "text": "Ciao {{1}}, {{2}} e ancora {{1}}."},
              {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Traccia"}]}]


def test_template_parameters_are_the_header_ones_then_the_body_ones() -> None:
    assert templates_view.param_count(COMPONENTS) == 3
    assert templates_view.render(COMPONENTS, ["7", "Anna", "spedito"]) == {
        "header": "Ordine 7", "body": "Ciao Anna, spedito e ancora Anna.", "footer": None,
        "buttons": [{"type": "URL", "text": "Traccia"}]}
    assert templates_view.send_components(COMPONENTS, ["7", "Anna", "spedito"]) == [
        {"type": "header", "parameters": [{"type": "text", "text": "7"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "spedito"}]}]
    for wrong in (["7"], ["7", "Anna", "spedito", "extra"], ["7", " ", "x"]):
        with pytest.raises(InvalidInput):
            templates_view.render(COMPONENTS, wrong)
    media_header = [{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "Ciao"}]
    with pytest.raises(InvalidInput, match="media header"):
        templates_view.send_components(media_header, [])


def test_mentions_are_email_local_parts_not_addresses() -> None:
    assert mentioned_local_parts("@Mario.Rossi guarda, e anche @anna. Scrivi a cliente@example.it") == [
        "anna", "mario.rossi"]
    assert mentioned_local_parts("nessuno qui") == []


def test_bodies_are_parsed_with_readable_refusals() -> None:
    assert isinstance(inputs.parse_body(SendRequest, b'{"type": "text", "text": "ciao"}').root, TextSend)
    for raw, message in ((b"{", "not valid JSON"), (b"[1]", "JSON object"), (b"", "required"),
                         (b'{"type": "text", "text": ""}', "text"), (b'{"type": "nope"}', "type")):
        with pytest.raises(InvalidInput, match=message):
            inputs.parse_body(SendRequest, raw)
    with pytest.raises(inputs.TooLarge):
        inputs.parse_body(SendRequest, b" " * (inputs.MAX_JSON_BODY + 1))


def test_ids_and_cursors() -> None:
    some = uuid.uuid4()
    assert inputs.parse_id(str(some)) == some
    for bad in ("x", "", "1" * 40):
        with pytest.raises(NotFound):
            inputs.parse_id(bad)
        with pytest.raises(NotFound):
            inputs.parse_int_id(bad)
    at = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert inputs.decode_cursor(inputs.encode_cursor(at, "k")) == (at, "k")
    for bad in ("", "abc", "W10", "WyJ4IiwgMV0"):
        with pytest.raises(InvalidInput):
            inputs.decode_cursor(bad)
