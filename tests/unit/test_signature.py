from __future__ import annotations

import pytest

from engine.whatsapp.signature import matching_secret, sign

pytestmark = pytest.mark.unit

BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_signature_matches_only_the_right_secret_and_bytes() -> None:
    header = sign(BODY, "s1")
    assert header.startswith("sha256=") and len(header) == 71
    assert matching_secret(BODY, header, ["s0", "s1", "s2"]) == "s1"
    assert matching_secret(BODY, header.upper().replace("SHA256=", "sha256="), ["s1"]) == "s1"
    assert matching_secret(BODY + b" ", header, ["s1"]) is None
    assert matching_secret(BODY, header, ["s0"]) is None
    assert matching_secret(BODY, header, []) is None


@pytest.mark.parametrize("header", [None, "", "sha1=abc", "sha256=", "sha256=zz", "sha256=" + "0" * 63, "sha256=" + "g" * 64])
def test_malformed_headers_never_match(header: str | None) -> None:
    assert matching_secret(BODY, header, ["s1"]) is None
