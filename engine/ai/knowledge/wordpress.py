"""A WordPress site's pages and posts over its REST API (``/wp-json/wp/v2``), fetched incrementally.

A sync lists every published id cheaply (``_fields=id,modified_gmt``) to learn what was deleted,
then fetches full content only for what changed since the last good sync (``modified_after``) and
for ids the knowledge base does not hold yet. WordPress compares ``modified_after`` with the
post's *local* modified time, so the cursor is sent a day early and the listing's GMT times decide
what really changed; content hashes downstream make a refetch of an unchanged page free.

Everything that can go wrong on the wire becomes one readable, typed error (``engine.errors``) at
:meth:`WordPressClient._get`, the one place that talks HTTP: the caller marks the source failed
with that sentence and keeps the last good content.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from engine.ai.knowledge.extract import Extracted, drop_instructions, html_to_text
from engine.errors import InvalidInput, ServiceUnavailable

KINDS = ("page", "post")
ROUTES = {"page": "pages", "post": "posts"}
PER_PAGE = 100
MAX_RESPONSE_BYTES = 20 * 1024 * 1024   # one page of 100 posts; a bigger answer is not a WordPress listing
MAX_PAGES = 200                          # 20 000 pages or posts of one kind
CURSOR_SLACK = timedelta(days=1)         # modified_after is compared with local time (see the docstring)
LIST_FIELDS = "id,modified_gmt"
FULL_FIELDS = "id,link,modified_gmt,title,content,status"

Progress = Callable[[str, int, int], None]


class NotWordPress(InvalidInput):
    """The address answers, but not as the WordPress REST API does (HTML, 404, garbage, loops)."""


class WordPressDenied(InvalidInput):
    """The site refuses anonymous reads of its REST API (401/403, often a security plugin)."""


def site_root(url: str) -> str:
    """The site's address without a trailing slash, or InvalidInput for anything but http(s)."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{url[:200]!r} is not a web address (use https://your-site.example)")
    if len(url) > 2000:
        raise InvalidInput("the WordPress address is longer than 2000 characters")
    path = parts.path.rstrip("/")
    if path.endswith("/wp-json") or "/wp-json/" in path:  # someone pasted the API's own address
        path = path[:path.index("/wp-json")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _gmt(value: Any) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)


def _title(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered or "")).strip()


def page_text(title: str, content_html: str) -> str:
    """The readable text of a post's rendered content (trafilatura wants a whole page, so the
    fragment is wrapped in one; lxml's text is the fallback when trafilatura finds nothing)."""
    document = (f"<html><head><title>{html.escape(title)}</title></head>"
                f"<body><article>{content_html}</article></body></html>")
    _, text = html_to_text(document)
    if not text:
        from lxml import etree
        from lxml import html as lxml_html

        try:
            text = lxml_html.fromstring(document).body.text_content()
        except (ValueError, etree.ParserError):
            text = ""
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip()


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    id: int
    modified_gmt: datetime | None
    link: str | None = None
    title: str = ""
    content: str = ""

    @property
    def external_id(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(slots=True)
class Snapshot:
    """What a sync learned: the external ids the site publishes now, the documents that must be
    (re)written, the new cursor, and how many items had no text at all."""

    present: set[str]
    documents: list[Extracted]
    cursor: str | None
    fetched: int = 0
    empty: list[str] = field(default_factory=list)


class WordPressClient:
    def __init__(self, site: str, *, client: httpx.AsyncClient | None = None, timeout_s: float = 20.0,
                 max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.site = site_root(site)
        self.api = f"{self.site}/wp-json/wp/v2"
        self.max_bytes = max_bytes
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=True, max_redirects=5,
                                                   headers={"User-Agent": "Parlo knowledge sync",
                                                            "Accept": "application/json"})

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    async def __aenter__(self) -> WordPressClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, route: str, params: dict[str, str]) -> tuple[Any, httpx.Headers]:
        """One GET of the REST API: the decoded JSON and the headers, or a readable error."""
        url = f"{self.api}/{route}"
        try:
            async with self._client.stream("GET", url, params=params) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise NotWordPress(f"{self.site} sent more than {self.max_bytes // (1024 * 1024)} MB for one "
                                           "page of the listing; that is not the WordPress REST API")
        except httpx.TooManyRedirects:
            raise NotWordPress(f"{self.site} redirects in a loop instead of answering the WordPress REST API") from None
        except httpx.TimeoutException:
            raise ServiceUnavailable(f"{self.site} did not answer in time (WordPress REST API)") from None
        except httpx.InvalidURL:
            raise InvalidInput(f"{self.site} is not a usable web address") from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"cannot reach {self.site} ({type(exc).__name__})") from None
        status = response.status_code
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        looks_html = kind in ("text/html", "application/xhtml+xml") or bytes(body[:200]).lstrip().startswith(b"<")
        if status == 404:
            raise NotWordPress(f"no WordPress REST API at {self.site} (HTTP 404 for /wp-json/wp/v2/{route})")
        if status in (401, 403):
            raise WordPressDenied(f"{self.site} refuses to share its content (HTTP {status}): the WordPress REST "
                                  "API must allow anonymous reads of pages and posts")
        if status == 429 or status >= 500:
            raise ServiceUnavailable(f"{self.site} answered HTTP {status}; try again later")
        if status >= 400:
            raise NotWordPress(f"{self.site} refused the request (HTTP {status}): {_wp_message(body)}")
        if looks_html:
            raise NotWordPress(f"{self.site} answers with a web page, not JSON: it is not the WordPress REST API "
                               "(is the address right, and is the REST API enabled?)")
        try:
            data = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise NotWordPress(f"{self.site} sent something that is not valid JSON; it is not the WordPress "
                               "REST API or the answer was cut short") from None
        if not isinstance(data, list) or not all(isinstance(row, dict) and isinstance(row.get("id"), int)
                                                 for row in data):
            raise NotWordPress(f"{self.site} answered JSON that is not a WordPress list of {route}")
        return data, response.headers

    async def _all(self, kind: str, params: dict[str, str], progress: Progress | None = None) -> list[dict[str, Any]]:
        route = ROUTES[kind]
        rows: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= pages:
            data, headers = await self._get(route, {**params, "per_page": str(PER_PAGE), "page": str(page)})
            rows += data
            try:
                pages = min(int(headers.get("x-wp-totalpages", "1") or 1), MAX_PAGES)
            except ValueError:
                raise NotWordPress(f"{self.site} sent an unreadable X-WP-TotalPages header") from None
            if progress is not None:
                progress("fetching", page, max(pages, 1))
            page += 1
        return rows

    async def list_ids(self, kind: str, progress: Progress | None = None) -> dict[int, datetime | None]:
        """Every published id of ``kind`` with its GMT modified time (small answers, all pages)."""
        rows = await self._all(kind, {"_fields": LIST_FIELDS, "status": "publish"}, progress)
        return {row["id"]: _gmt(row.get("modified_gmt")) for row in rows}

    async def fetch(self, kind: str, *, modified_after: datetime | None = None, include: list[int] | None = None,
                    progress: Progress | None = None) -> list[Item]:
        params = {"_fields": FULL_FIELDS, "status": "publish", "orderby": "id", "order": "asc"}
        if modified_after is not None:
            params["modified_after"] = modified_after.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        if include is not None:
            items: list[Item] = []
            for start in range(0, len(include), PER_PAGE):
                part = include[start:start + PER_PAGE]
                rows = await self._all(kind, {**params, "include": ",".join(map(str, part))}, progress)
                items += [_item(kind, row) for row in rows]
            return items
        return [_item(kind, row) for row in await self._all(kind, params, progress)]


def _wp_message(body: bytes | bytearray) -> str:
    try:
        message = orjson.loads(bytes(body)).get("message")
    except (orjson.JSONDecodeError, AttributeError):
        return "no explanation"
    return _title(str(message))[:200] if message else "no explanation"


def _item(kind: str, row: dict[str, Any]) -> Item:
    title = row.get("title")
    content = row.get("content")
    return Item(kind, int(row["id"]), _gmt(row.get("modified_gmt")),
                str(row["link"]) if isinstance(row.get("link"), str) else None,
                _title(title.get("rendered", "") if isinstance(title, dict) else str(title or "")),
                str(content.get("rendered", "")) if isinstance(content, dict) else str(content or ""))


def to_document(item: Item) -> Extracted | None:
    """The item as a knowledge document (None when it has no text, e.g. a gallery page)."""
    text, dropped = drop_instructions(page_text(item.title, item.content))
    text = text.strip()
    if not text:
        return None
    return Extracted(item.external_id, item.title or f"{item.kind} {item.id}", text, item.link, dropped)


async def fetch_site(site: str, *, cursor: str | None, known: set[str], client: httpx.AsyncClient | None = None,
                     progress: Progress | None = None, timeout_s: float = 20.0,
                     max_bytes: int = MAX_RESPONSE_BYTES) -> Snapshot:
    """The site's pages and posts as a :class:`Snapshot`. ``cursor`` is the newest GMT modified time
    of the last good sync (None: fetch everything); ``known`` the external ids already stored."""
    since = _gmt(cursor) if cursor else None
    present: set[str] = set()
    changed: list[Item] = []
    newest: datetime | None = since
    async with WordPressClient(site, client=client, timeout_s=timeout_s, max_bytes=max_bytes) as wp:
        for kind in KINDS:
            if since is None:
                items = await wp.fetch(kind, progress=progress)
                listed = {i.id: i.modified_gmt for i in items}
            else:
                listed = await wp.list_ids(kind, progress)
                items = await wp.fetch(kind, modified_after=since - CURSOR_SLACK, progress=progress)
                got = {i.id for i in items}
                # new to us, or changed by the GMT listing but missed by the local-time filter
                missing = sorted(i for i, m in listed.items() if i not in got and (
                    f"{kind}:{i}" not in known or (m is not None and m > since)))
                if missing:
                    items += await wp.fetch(kind, include=missing, progress=progress)
            present |= {f"{kind}:{i}" for i in listed}
            changed += [i for i in items if i.id in listed]
            stamps = [m for m in listed.values() if m is not None]
            if stamps and (newest is None or max(stamps) > newest):
                newest = max(stamps)
    documents, empty = [], []
    for n, item in enumerate(changed, 1):
        doc = to_document(item)
        if doc is None:
            empty.append(item.external_id)
        else:
            documents.append(doc)
        if progress is not None:
            progress("extracting", n, len(changed))
    return Snapshot(present, documents, newest.strftime("%Y-%m-%dT%H:%M:%S") if newest else None, len(changed), empty)
