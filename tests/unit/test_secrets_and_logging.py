from __future__ import annotations

import io
import logging

import orjson
import pytest

from engine.logging import configure_logging, log_context
from engine.secrets import MASK, mask_text, mask_url, redact

pytestmark = pytest.mark.unit


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql://parlo:s3cr3t@127.0.0.1:5432/parlo") == f"postgresql://parlo:{MASK}@127.0.0.1:5432/parlo"
    assert mask_url("redis://:pw@localhost:6379/0") == f"redis://:{MASK}@localhost:6379/0"
    assert mask_url("postgresql://parlo@host/db") == "postgresql://parlo@host/db"


def test_mask_text_finds_urls_inside_messages() -> None:
    text = "could not connect to postgresql://u:topsecret@db:5432/x (timeout)"
    assert "topsecret" not in mask_text(text)
    assert "postgresql://u:" in mask_text(text)


def test_redact_masks_secret_keys_recursively() -> None:
    data = {"user": "x", "password": "p", "nested": {"access_token": "t", "list": ["redis://:pw@h/0"]}}
    out = redact(data)
    assert out == {"user": "x", "password": MASK,
                   "nested": {"access_token": MASK, "list": [f"redis://:{MASK}@h/0"]}}


def test_log_lines_are_json_with_context_and_no_secrets() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logger = logging.getLogger("parlo.test")
    with log_context(tenant="acme", wamid="wamid.1"):
        with log_context(run_id="r1"):
            logger.info("stored", extra={"app_secret": "hunter2", "url": "postgresql://a:hunter2@h/d"})
    logger.info("outside")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "stored"
    assert (lines[0]["tenant"], lines[0]["wamid"], lines[0]["run_id"]) == ("acme", "wamid.1", "r1")
    assert "hunter2" not in stream.getvalue()
    assert "tenant" not in lines[1]


def test_unknown_context_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        with log_context(customer="x"):
            pass
