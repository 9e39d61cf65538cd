"""Message templates as agents pick them: the list, how many parameters each takes, a preview
with the parameters filled in, and the components a send needs.

Parameters are positional: those of a text header (``{{1}}`` in the header) come first, then
those of the body, in placeholder order.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import InvalidInput, NotFound
from engine.inbox.principal import Principal

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MAX_PARAM = 1024


class TemplateQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z_]+$")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: list[str] = Field(default_factory=list, max_length=60)


def _component(components: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in components if isinstance(c, dict) and str(c.get("type", "")).upper() == kind), None)


def _names(text: str | None) -> list[str]:
    seen: list[str] = []
    for name in _PLACEHOLDER.findall(text or ""):
        if name not in seen:
            seen.append(name)
    return seen


def _text_header(components: list[dict[str, Any]]) -> dict[str, Any] | None:
    header = _component(components, "HEADER")
    if header is not None and str(header.get("format", "TEXT")).upper() == "TEXT":
        return header
    return None


def param_count(components: list[dict[str, Any]]) -> int:
    header = _text_header(components)
    body = _component(components, "BODY")
    return len(_names(header.get("text") if header else None)) + len(_names(body.get("text") if body else None))


def _fill(text: str | None, values: dict[str, str]) -> str | None:
    if text is None:
        return None
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _split(components: list[dict[str, Any]], params: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    expected = param_count(components)
    if len(params) != expected:
        raise InvalidInput(f"this template takes {expected} parameter(s), {len(params)} given")
    for p in params:
        if not p.strip() or len(p) > MAX_PARAM:
            raise InvalidInput(f"each parameter must be 1 to {MAX_PARAM} characters and not blank")
    header = _text_header(components)
    header_names = _names(header.get("text") if header else None)
    body = _component(components, "BODY")
    body_names = _names(body.get("text") if body else None)
    return dict(zip(header_names, params)), dict(zip(body_names, params[len(header_names):]))


def render(components: list[dict[str, Any]], params: list[str]) -> dict[str, Any]:
    """The template as the customer will read it."""
    header_values, body_values = _split(components, params)
    header = _component(components, "HEADER")
    body = _component(components, "BODY")
    footer = _component(components, "FOOTER")
    buttons = _component(components, "BUTTONS")
    header_out: str | None = None
    if header is not None:
        header_out = _fill(header.get("text"), header_values) if _text_header(components) else \
            f"[{str(header.get('format', 'media')).lower()}]"
    return {"header": header_out, "body": _fill(body.get("text") if body else None, body_values),
            "footer": footer.get("text") if footer else None,
            "buttons": [{"type": b.get("type"), "text": b.get("text")} for b in (buttons or {}).get("buttons", [])
                        if isinstance(b, dict)]}


def send_components(components: list[dict[str, Any]], params: list[str]) -> list[dict[str, Any]]:
    """The ``components`` of a Cloud API template send carrying ``params``."""
    header = _component(components, "HEADER")
    if header is not None and _text_header(components) is None:
        raise InvalidInput("templates with a media header cannot be sent from the inbox yet")
    header_values, body_values = _split(components, params)
    out: list[dict[str, Any]] = []
    for kind, values in (("header", header_values), ("body", body_values)):
        if values:
            out.append({"type": kind, "parameters": [{"type": "text", "text": v} for v in values.values()]})
    return out


def _item(row: asyncpg.Record) -> dict[str, Any]:
    components = list(row["components"] or [])
    return {"id": row["id"], "name": row["name"], "language": row["language"], "category": row["category"],
            "status": str(row["status"]).upper(), "components": components, "params": param_count(components)}


async def list_templates(conn: asyncpg.Connection, who: Principal, query: TemplateQuery) -> dict[str, Any]:
    who.require("template.read")
    rows = await conn.fetch(sql("inbox_templates", "list_templates"), who.tenant_id, query.status)
    return {"items": [_item(r) for r in rows]}


async def preview(conn: asyncpg.Connection, who: Principal, template_id: int, request: PreviewRequest) -> dict[str, Any]:
    who.require("template.read")
    row = await conn.fetchrow(sql("inbox_templates", "get_template"), who.tenant_id, template_id)
    if row is None:
        raise NotFound(f"no template {template_id}")
    return render(list(row["components"] or []), request.params)


