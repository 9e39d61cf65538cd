"""Meta's deliveries through the real Serve Gateway (WebhookFastPath, ahead of FastAPI's routing):
hostile and broken requests get their 4xx and store nothing; good ones are stored once, counted
in the metrics and reach the live stream; the documented route is still in OpenAPI."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from bench.simulator import payloads
from bench.simulator.webhooks import encode, sign
from tests.api_harness import Gateway

pytestmark = pytest.mark.integration


def _delivery(kit, wa_id: str, text: str, wamid: str) -> bytes:  # noqa: ANN001
    return encode(payloads.inbound(payloads.text_message(wa_id, text, wamid=wamid), waba_id=kit.waba_id,
                                   phone_number_id=kit.phone_number_id, display_phone_number=kit.display_phone))


async def _stored(gateway: Gateway, wamid: str) -> int:
    async with gateway.connect() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE wamid = $1", wamid))


async def test_bad_deliveries_get_their_4xx_and_store_nothing(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("owner",))
    url = f"{gateway.base_url}/webhooks/whatsapp"
    wamid = f"wamid.fast.{uuid.uuid4().hex}"
    body = _delivery(kit, "393331112222", "ciao", wamid)
    limit = gateway.settings.webhook_max_bytes
    async with httpx.AsyncClient(timeout=15) as http:
        assert (await http.post(url, content=body)).status_code == 401  # unsigned
        wrong = await http.post(url, content=body, headers={"x-hub-signature-256": sign(body, "not-the-secret")})
        assert wrong.status_code == 401 and "Signature" in wrong.json()["error"]
        tampered = body.replace(b"ciao", b"ciaO")
        assert (await http.post(url, content=tampered,
                                headers={"x-hub-signature-256": sign(body, kit.app_secret)})).status_code == 401
        big = b"{" + b" " * (limit + 1) + b"}"
        declared = await http.post(url, content=big, headers={"x-hub-signature-256": sign(big, kit.app_secret)})
        assert declared.status_code == 413 and str(limit) in declared.json()["error"]

        async def chunks():  # no content-length: the size is only known while reading
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        streamed = await http.post(url, content=chunks(), headers={"x-hub-signature-256": "sha256=" + "0" * 64})
        assert streamed.status_code == 413
        not_json = b"this is not json"
        refused = await http.post(url, content=not_json, headers={"x-hub-signature-256": sign(not_json, kit.app_secret)})
        assert refused.status_code == 400 and "JSON" in refused.json()["error"]
        for silly in ("-1", "abc", "1e9"):
            raw = await _raw_post(gateway.base_url, body, {"content-length": silly,
                                                           "x-hub-signature-256": sign(body, kit.app_secret)})
            assert raw.split(b" ", 2)[1] in (b"400", b"413"), raw[:200]
    assert await _stored(gateway, wamid) == 0

    # the same delivery, signed, twice: stored once, both answered 200
    async with httpx.AsyncClient(timeout=15) as http:
        for _ in range(2):
            ok = await http.post(url, content=body, headers={"x-hub-signature-256": sign(body, kit.app_secret)})
            assert ok.status_code == 200 and ok.json() == {"status": "stored"}
    assert await _stored(gateway, wamid) == 1


async def _raw_post(base_url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A request httpx would refuse to send (a content-length that is not a number)."""
    import asyncio

    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST /webhooks/whatsapp HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


async def test_a_client_that_hangs_up_mid_body_loses_nothing(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("owner",))
    wamid = f"wamid.cut.{uuid.uuid4().hex}"
    body = _delivery(kit, "393331113333", "interrotto", wamid)
    host, port = gateway.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /webhooks/whatsapp HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"
                     f"x-hub-signature-256: {sign(body, kit.app_secret)}\r\n\r\n".encode() + body[: len(body) // 2])
    # Meta retries in full: stored once, and the Gateway is still serving
    assert kit.post_webhook(payloads.inbound(payloads.text_message("393331113333", "interrotto", wamid=wamid),
                                             waba_id=kit.waba_id, phone_number_id=kit.phone_number_id,
                                             display_phone_number=kit.display_phone)).status_code == 200
    assert await _stored(gateway, wamid) == 1


async def test_stored_deliveries_are_counted_and_documented(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("owner",))
    assert kit.inbound("393331114444", "contami").status_code == 200
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=15) as http:
        metrics = (await http.get("/metrics")).text
        counted = [line for line in metrics.splitlines() if line.startswith("parlo_http_requests_total{")
                   and 'route="/webhooks/whatsapp"' in line and 'method="POST"' in line and 'status="200"' in line]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1
        spec = (await http.get("/openapi.json")).json()
        assert "post" in spec["paths"]["/webhooks/whatsapp"]
