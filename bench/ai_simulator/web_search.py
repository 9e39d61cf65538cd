"""Anthropic's web search server tool (``web_search_20250305``), as the Messages API runs it.

The tool definition is checked the way the API checks it (a malformed one is a 400
``invalid_request_error`` naming the field); a search finds the simulated web's pages
(``AIState.web_pages``) that share a word with the query, on the allowed domains only (a domain
includes its subdomains; a ``domain/path`` entry limits to that path), never on blocked ones. The
n-th search past ``max_uses`` gets the ``max_uses_exceeded`` error result, as the API answers, and
is not counted. The answer cites the best pages found with ``web_search_result_location``
citations.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.ai_simulator.state import AIState, WebPage
from bench.ai_simulator.text import relevance, tokens
from bench.ai_simulator.wire import Rejected, new_id

VERSIONS = frozenset({"web_search_20250305", "web_search_20260209"})
_FIELDS = frozenset({"type", "name", "max_uses", "allowed_domains", "blocked_domains", "user_location",
                     "cache_control", "allowed_callers", "defer_loading", "strict"})
RESULTS_PER_SEARCH = 5
CITED_PAGES = 2
CITED_CHARS = 150


@dataclass(frozen=True, slots=True)
class Tool:
    max_uses: int | None
    allowed: tuple[str, ...] | None
    blocked: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Search:
    """One search the model ran: its query, and its pages (None: refused with ``error_code``)."""

    id: str
    query: str
    pages: list[WebPage] | None
    error_code: str | None = None


def tool_from(body: dict[str, Any]) -> Tool | None:
    """The request's web search tool, checked; None when it offers none. Other tools (client
    tools with an ``input_schema``) are not simulated and are ignored, as before."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise Rejected(400, "tools: Input should be a valid list")
    found: Tool | None = None
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise Rejected(400, f"tools.{i}: Input should be a valid dictionary or object")
        kind = tool.get("type")
        if not (isinstance(kind, str) and kind.startswith("web_search")):
            continue
        if kind not in VERSIONS:
            raise Rejected(400, f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the "
                                f"expected tags: {', '.join(repr(v) for v in sorted(VERSIONS))}")
        where = f"tools.{i}.{kind}"
        if tool.get("name") != "web_search":
            raise Rejected(400, f"{where}.name: Input should be 'web_search'")
        extras = sorted(set(tool) - _FIELDS)
        if extras:
            raise Rejected(400, f"{where}.{extras[0]}: Extra inputs are not permitted")
        max_uses = tool.get("max_uses")
        if max_uses is not None and (not isinstance(max_uses, int) or isinstance(max_uses, bool) or max_uses < 1):
            raise Rejected(400, f"{where}.max_uses: Input should be greater than or equal to 1")
        allowed = _domains(tool.get("allowed_domains"), f"{where}.allowed_domains")
        blocked = _domains(tool.get("blocked_domains"), f"{where}.blocked_domains")
        if allowed is not None and blocked is not None:
            raise Rejected(400, f"{where}: Cannot specify both allowed_domains and blocked_domains")
        if found is not None:
            raise Rejected(400, "tools: Tool names must be unique.")
        found = Tool(max_uses, allowed, blocked)
    return found


def _domains(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise Rejected(400, f"{where}: Input should be a valid list")
    out = []
    for j, domain in enumerate(value):
        if not isinstance(domain, str) or not domain.strip():
            raise Rejected(400, f"{where}.{j}: Input should be a valid string")
        if "://" in domain:
            raise Rejected(400, f"{where}.{j}: Domain should not include the URL scheme: {domain!r}")
        if domain.count("*") > 1 or domain.startswith("*") or " " in domain:
            raise Rejected(400, f"{where}.{j}: Invalid domain: {domain!r}")
        out.append(domain.lower().rstrip("/"))
    return tuple(out)


def _on(url: str, domain: str) -> bool:
    parts = urlsplit(url)
    host, path = (parts.hostname or ""), (parts.path or "/")
    name, _, prefix = domain.partition("/")
    if not (host == name or host.endswith("." + name)):
        return False
    return not prefix or path.lstrip("/").startswith(prefix.replace("*", ""))


def run(state: AIState, tool: Tool, queries: tuple[str, ...]) -> list[Search]:
    with state.lock:
        web = list(state.web_pages)
    searches = []
    for n, query in enumerate(queries):
        if tool.max_uses is not None and n >= tool.max_uses:
            searches.append(Search(new_id("srvtoolu_sim"), query, None, "max_uses_exceeded"))
            continue
        pages = [p for p in web
                 if (tool.allowed is None or any(_on(p.url, d) for d in tool.allowed))
                 and not (tool.blocked and any(_on(p.url, d) for d in tool.blocked))]
        scored = sorted(((relevance(query, f"{p.title} {p.text}"), i, p) for i, p in enumerate(pages)),
                        key=lambda t: (-t[0], t[1]))
        searches.append(Search(new_id("srvtoolu_sim"), query, [p for score, _, p in scored[:RESULTS_PER_SEARCH] if score > 0]))
    return searches


def counted(searches: list[Search]) -> int:
    """What usage reports as ``web_search_requests``: the searches that ran."""
    return sum(1 for s in searches if s.pages is not None)


def query_tokens(searches: list[Search]) -> int:
    """The model writes each search's input: output tokens."""
    return sum(tokens(json.dumps({"query": s.query}, ensure_ascii=False)) for s in searches)


def result_tokens(searches: list[Search]) -> int:
    """Search results are read by the model, so they are billed as input tokens."""
    return sum(tokens(p.title) + tokens(p.text) for s in searches for p in s.pages or [])


def cited(searches: list[Search]) -> list[WebPage]:
    """The pages the answer cites: the best page of each search, in order, at most CITED_PAGES
    (the same page twice when two searches found it best: the API cites a page per claim)."""
    return [search.pages[0] for search in searches if search.pages][:CITED_PAGES]


def tool_use_block(search: Search) -> dict[str, Any]:
    return {"type": "server_tool_use", "id": search.id, "name": "web_search", "input": {"query": search.query}}


def query_json(search: Search) -> list[str]:
    """The ``input_json_delta`` pieces of a search's input (the API streams partial JSON)."""
    whole = json.dumps({"query": search.query}, ensure_ascii=False)
    middle = max(len(whole) // 2, 1)
    return ["", whole[:middle], whole[middle:]]


def result_block(search: Search) -> dict[str, Any]:
    if search.pages is None:
        content: Any = {"type": "web_search_tool_result_error", "error_code": search.error_code}
    else:
        content = [{"type": "web_search_result", "title": p.title, "url": p.url, "encrypted_content": _opaque(p.text),
                    "page_age": p.page_age} for p in search.pages]
    return {"type": "web_search_tool_result", "tool_use_id": search.id, "content": content}


def citation(page: WebPage) -> dict[str, Any]:
    return {"type": "web_search_result_location", "url": page.url, "title": page.title,
            "cited_text": page.text[:CITED_CHARS], "encrypted_index": _opaque(page.url + page.text[:CITED_CHARS])}


def _opaque(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()
