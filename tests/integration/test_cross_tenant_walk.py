"""Tenant isolation, proven by walking the API: every route of the OpenAPI spec is called with a
token of tenant A (its owner, who may do the most) and the ids of tenant B. Every answer must be
403 or 404 (or a 4xx validation answer for a body that names B's records), nothing of B's may
appear in any answer, and B's rows must be exactly as they were.

A route added tomorrow is walked too; a path parameter the walk cannot map to one of B's records
fails the test, so that a new resource cannot slip past it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api_harness import Gateway, TenantKit

pytestmark = pytest.mark.integration

# routes that are not tenant resources, or that only concern the caller's own session
PUBLIC_OR_SELF = {"/healthz", "/metrics", "/webhooks/whatsapp", "/api/auth/login", "/api/auth/refresh",
                  "/api/auth/logout"}


async def _world_of_b(conn: asyncpg.Connection, kit: TenantKit) -> dict[str, Any]:
    """One record of every kind in tenant B, made as the owning role (the walk must not depend on
    the routes under test to build its victims)."""
    t = kit.id
    agent = kit.members["agent"].id
    contact = await conn.fetchval("INSERT INTO contacts (tenant_id, wa_id, profile_name) "
                                  "VALUES ($1, '393339990001', 'Bianca Segreta') RETURNING id", t)
    channel = await conn.fetchval("SELECT id FROM channels WHERE tenant_id = $1", t)
    team = await conn.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, 'Squadra Segreta') RETURNING id", t)
    await conn.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)", t, team, agent)
    conversation = await conn.fetchval(
        "INSERT INTO conversations (tenant_id, channel_id, contact_id, team_id, assignee_id, last_inbound_at, "
        "last_message_at) VALUES ($1, $2, $3, $4, $5, now(), now()) RETURNING id", t, channel, contact, team, agent)
    message = await conn.fetchval(
        "INSERT INTO messages (tenant_id, conversation_id, direction, wamid, type, body) "
        "VALUES ($1, $2, 'inbound', 'wamid.SEGRETO', 'image', 'messaggio segreto di B') RETURNING id", t, conversation)
    media = await conn.fetchval("INSERT INTO media (tenant_id, message_id, media_id, mime_type, state) "
                                "VALUES ($1, $2, 'media-segreto', 'image/jpeg', 'failed') RETURNING id", t, message)
    label = await conn.fetchval("INSERT INTO labels (tenant_id, name) VALUES ($1, 'etichetta-segreta') RETURNING id", t)
    await conn.execute("INSERT INTO conversation_labels (tenant_id, conversation_id, label_id) VALUES ($1, $2, $3)",
                       t, conversation, label)
    note = await conn.fetchval("INSERT INTO notes (tenant_id, conversation_id, author_id, body) "
                               "VALUES ($1, $2, $3, 'nota segreta di B') RETURNING id", t, conversation, agent)
    canned = await conn.fetchval("INSERT INTO canned_replies (tenant_id, shortcut, title, body) "
                                 "VALUES ($1, 'segreto', 'Risposta segreta', 'testo segreto di B') RETURNING id", t)
    notification = await conn.fetchval(
        "INSERT INTO notifications (tenant_id, user_id, kind, conversation_id) VALUES ($1, $2, 'mention', $3) "
        "RETURNING id", t, agent, conversation)
    chat = await conn.fetchval("INSERT INTO chat_channels (tenant_id, kind, name) VALUES ($1, 'channel', 'canale-segreto') "
                               "RETURNING id", t)
    await conn.execute("INSERT INTO chat_members (tenant_id, channel_id, user_id) VALUES ($1, $2, $3)", t, chat, agent)
    chat_message = await conn.fetchval("INSERT INTO chat_messages (tenant_id, channel_id, author_id, body) "
                                       "VALUES ($1, $2, $3, 'chat segreta di B') RETURNING id", t, chat, agent)
    template = await conn.fetchval(
        "INSERT INTO templates (tenant_id, waba_id, name, language, status, components) "
        "VALUES ($1, $2, 'modello_segreto', 'it', 'APPROVED', '[{\"type\": \"BODY\", \"text\": \"Ciao {{1}}\"}]') "
        "RETURNING id", t, kit.waba_id)
    kb_source = await conn.fetchval("INSERT INTO kb_sources (tenant_id, kind, name) VALUES ($1, 'file', 'fonte-segreta') "
                                    "RETURNING id", t)
    return {"kb_source": kb_source, "conversation": conversation, "contact": contact, "team": team, "user": agent, "message": message,
            "media": media, "label": label, "note": note, "canned": canned, "notification": notification,
            "chat_channel": chat, "chat_message": chat_message, "template": template, "channel": channel}


# path segment (or parameter name) → which of B's records goes there
_RESOURCE_OF = {
    "conversations": "conversation", "conversation_id": "conversation",
    "contacts": "contact", "contact_id": "contact",
    "teams": "team", "team_id": "team",
    "users": "user", "user_id": "user",
    "messages": "message", "message_id": "message",
    "media": "media", "media_id": "media",
    "labels": "label", "label_id": "label",
    "notes": "note", "note_id": "note",
    "canned": "canned", "canned_id": "canned",
    "notifications": "notification", "notification_id": "notification",
    "channels": "chat_channel", "channel_id": "chat_channel",
    "templates": "template", "template_id": "template",
    "sources": "kb_source", "source_id": "kb_source",
}


def _fill_path(path: str, b: dict[str, Any]) -> str:
    segments = path.strip("/").split("/")
    out = []
    for i, segment in enumerate(segments):
        match = re.fullmatch(r"\{(\w+)\}", segment)
        if not match:
            out.append(segment)
            continue
        name = match.group(1)
        kind = _RESOURCE_OF.get(name) or (_RESOURCE_OF.get(segments[i - 1]) if i else None)
        if path.startswith("/api/chat/") and name in ("id", "channel_id"):
            kind = "chat_channel"
        assert kind is not None, f"the walk does not know which record {{{name}}} of {path} names: add it"
        out.append(str(b[kind]))
    return "/" + "/".join(out)


# a valid value for each constrained string in the API, so that a body fails on its ids, not its format
_PATTERN_EXAMPLES = {
    "^#[0-9a-fA-F]{6}$": "#336699",
    "^[a-z0-9][a-z0-9_-]{0,39}$": "abc",
    "^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$": "it",
    "^[a-z0-9_]+$": "benvenuto",
    "^(it|en)$": "it",
    "^[^@\\s]{1,64}@[^@\\s]+\\.[^@\\s]+$": "nuovo@example.com",
}


def _body_for(schema: dict[str, Any] | None, spec: dict[str, Any], b: dict[str, Any]) -> Any:
    """A plausible body for a request schema, naming B's records wherever an id goes."""
    if schema is None:
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _body_for(spec["components"]["schemas"][name], spec, b)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return _body_for(options[0], spec, b) if options else None
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        body = {}
        for prop, sub in schema.get("properties", {}).items():
            resource = _RESOURCE_OF.get(prop) if prop.endswith("_id") else None
            if prop.endswith("_ids"):
                resource = _RESOURCE_OF.get(prop[:-1])
                if resource is not None:
                    body[prop] = [str(b[resource])]
                    continue
            if prop == "email":
                body[prop] = "nuovo@example.com"
                continue
            if resource is not None:
                body[prop] = b[resource] if not isinstance(b[resource], uuid.UUID) else str(b[resource])
            else:
                body[prop] = _body_for(sub, spec, b)
        return body
    if kind == "array":
        item = _body_for(schema.get("items", {}), spec, b)
        return [] if item is None else [item]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "string":
        if schema.get("format") == "uuid":
            return str(b["user"])
        if schema.get("format") == "date-time":
            return "2030-01-01T10:00:00Z"
        for pattern, example in _PATTERN_EXAMPLES.items():
            if schema.get("pattern") == pattern:
                return example
        assert "pattern" not in schema, f"the walk has no example for the pattern {schema['pattern']}: add one"
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        return b["message"]
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    return None


def _names_b(body: Any, b: dict[str, Any]) -> bool:
    values = {str(v) for v in b.values()}
    if isinstance(body, dict):
        return any(_names_b(v, b) for v in body.values())
    if isinstance(body, list):
        return any(_names_b(v, b) for v in body)
    return body is not None and not isinstance(body, bool) and str(body) in values


def _leaks(text: str, b: dict[str, Any], sent: str = "") -> list[str]:
    """B's ids and words in an answer, except ids the request itself carried (a 404 may name
    the id it did not find)."""
    # integer ids are short and may occur by chance; only uuids and B's words are checked
    ids = [str(v) for v in b.values() if isinstance(v, uuid.UUID)]
    words = ["Bianca Segreta", "393339990001", "segret", "SEGRETO", "Squadra Segreta", "canale-segreto",
             "fonte-segreta"]
    return [n for n in ids if n in text and n not in sent] + [w for w in words if w in text]


async def _snapshot(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, Any]:
    tables = [r["table_name"] for r in await conn.fetch(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id' "
        "AND table_schema = 'public' ORDER BY table_name")]
    snapshot = {}
    for table in tables:
        if table in ("audit_log", "refresh_tokens", "webhook_receipts"):
            continue  # B's own logins and receipts are not what A may touch; they are checked by count below
        rows = await conn.fetch(f"SELECT * FROM {table} WHERE tenant_id = $1", tenant_id)
        snapshot[table] = sorted(repr(sorted(dict(r).items())) for r in rows)
    snapshot["audit_log_count"] = await conn.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant_id)
    return snapshot


async def test_every_route_with_tenant_b_ids_answers_403_or_404_and_leaks_nothing(gateway: Gateway) -> None:
    a = await gateway.tenant()
    b_kit = await gateway.tenant()
    async with gateway.connect() as conn:
        b = await _world_of_b(conn, b_kit)
        before = await _snapshot(conn, b_kit.id)

    async with a.http("owner") as http:
        # what is asserted is the answer, not its speed: A's own /api/ai/ask may be the Assistant's
        # first question (model load, router training), slow on a busy machine
        http.timeout = httpx.Timeout(120)
        spec = (await http.get("/openapi.json")).json()
        walked: list[tuple[str, str, int]] = []
        for path, methods in sorted(spec["paths"].items()):
            if path in PUBLIC_OR_SELF:
                continue
            for method, operation in methods.items():
                url = _fill_path(path, b)
                body_schema = (operation.get("requestBody", {}).get("content", {})
                               .get("application/json", {}).get("schema"))
                kwargs: dict[str, Any] = {}
                if body_schema is not None:
                    kwargs["json"] = _body_for(body_schema, spec, b)
                elif "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                    kwargs["files"] = {"file": ("a.jpg", b"\xff\xd8\xff\xe0" + b"0" * 64, "image/jpeg")}
                answer = await http.request(method.upper(), url, **kwargs)
                walked.append((method.upper(), path, answer.status_code))
                sent = url + repr(kwargs.get("json"))
                assert not _leaks(answer.text, b, sent), \
                    f"{method.upper()} {url} leaked {_leaks(answer.text, b, sent)}: {answer.text[:300]}"
                if "{" in path:
                    assert answer.status_code in (403, 404), \
                        f"{method.upper()} {path} with B's ids answered {answer.status_code}: {answer.text[:300]}"
                else:
                    # a route without ids acts on A's own tenant; a body naming B's records must not land
                    assert answer.status_code < 500, f"{method.upper()} {path} answered {answer.status_code}"

        # and every conversation route on A's own conversation with B's records in the body
        a.inbound("393330000777", "Ciao da A")
        own = await a.conversation_of("393330000777")
        for path, methods in sorted(spec["paths"].items()):
            if not path.startswith("/api/conversations/{"):
                continue
            for method, operation in methods.items():
                body_schema = (operation.get("requestBody", {}).get("content", {})
                               .get("application/json", {}).get("schema"))
                if body_schema is None:
                    continue
                url = _fill_path(path, b).replace(str(b["conversation"]), str(own))
                if "{" in path.replace("{id}", "", 1).replace("{conversation_id}", "", 1):
                    continue  # a second id in the path is B's: covered by the first walk
                body = _body_for(body_schema, spec, b)
                answer = await http.request(method.upper(), url, json=body)
                assert not _leaks(answer.text, b, url + repr(body)), f"{method.upper()} {url} leaked: {answer.text[:300]}"
                if _names_b(body, b):
                    assert answer.status_code in (403, 404, 409, 422), \
                        f"{method.upper()} {path} accepted B's records in {body}: {answer.status_code} {answer.text[:300]}"

    async with gateway.connect() as conn:
        after = await _snapshot(conn, b_kit.id)
    assert after == before, "tenant A's requests changed tenant B's rows"
    assert len(walked) >= 20, f"only {len(walked)} routes walked: {walked}"
    print(f"walked {len(walked)} operations")


async def test_a_tenant_a_token_cannot_read_b_through_list_routes(gateway: Gateway) -> None:
    a = await gateway.tenant()
    b_kit = await gateway.tenant()
    async with gateway.connect() as conn:
        b = await _world_of_b(conn, b_kit)
    async with a.http("owner") as http:
        spec = (await http.get("/openapi.json")).json()
        for path, methods in spec["paths"].items():
            if "get" not in methods or "{" in path or path in PUBLIC_OR_SELF or not path.startswith("/api/"):
                continue
            for query in ("", "?q=segret", "?q=Bianca", "?scope=all", f"?team_id={b['team']}", f"?label_id={b['label']}",
                          f"?channel_id={b['channel']}"):
                answer = await http.get(path + query)
                assert answer.status_code < 500, f"GET {path}{query} → {answer.status_code}"
                assert not _leaks(answer.text, b, query), f"GET {path}{query} leaked: {answer.text[:300]}"


async def test_forged_and_foreign_tokens_are_refused_everywhere(gateway: Gateway) -> None:
    import jwt

    a = await gateway.tenant()
    forged = jwt.encode({"sub": str(a.members["owner"].id), "tid": str(a.id), "role": "owner"},
                        "a key of the right length that is not the engine's", algorithm="HS256")
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=15) as http:
        spec = (await http.get("/openapi.json")).json()
        for path, methods in spec["paths"].items():
            if not path.startswith("/api/") or path in PUBLIC_OR_SELF:
                continue
            url = re.sub(r"\{\w+\}", str(uuid.uuid4()), path)
            for method in methods:
                for headers in ({}, {"authorization": f"Bearer {forged}"}, {"authorization": "Bearer x.y.z"}):
                    answer = await http.request(method.upper(), url, headers=headers)
                    assert answer.status_code == 401, f"{method.upper()} {path} {headers}: {answer.status_code}"
                    assert answer.headers.get("www-authenticate") == "Bearer"
