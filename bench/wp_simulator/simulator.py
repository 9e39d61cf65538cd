"""``WordPressSimulator``: one WordPress site on a local port, served by aiohttp on a thread and
loop of its own (like ``bench.ai_simulator.AISimulator``) so that a test's loop can drive it.

What it reproduces of WordPress 6.x (``wp-includes/rest-api``):

* ``GET /wp-json/`` — the index with its namespaces;
* ``GET /wp-json/wp/v2/{pages,posts}`` — published items, newest first, ``per_page`` (1–100,
  default 10) and ``page``, ``X-WP-Total`` and ``X-WP-TotalPages`` headers, ``_fields`` (top-level
  keys only), ``modified_after`` (ISO 8601), ``include`` (comma-separated ids); a page past the
  end is WordPress's 400 ``rest_post_invalid_page_number``, an unknown route its 404
  ``rest_no_route``.

Faults (``set_fault``) answer every request under ``/wp-json`` until cleared.
"""

from __future__ import annotations

import asyncio
import html
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from bench.http_double import ThreadedHTTPServer

FAULTS = ("html", "not_found", "garbage", "unauthorized", "forbidden", "server_error", "slow", "redirect_loop",
          "huge", "wrong_shape")
KINDS = {"pages": "page", "posts": "post"}


@dataclass
class Item:
    kind: str            # page | post
    id: int
    title: str           # as WordPress stores it (HTML entities are encoded in title.rendered)
    content: str         # HTML
    modified: datetime   # UTC
    status: str = "publish"

    def as_json(self, site: str) -> dict[str, Any]:
        stamp = self.modified.strftime("%Y-%m-%dT%H:%M:%S")
        slug = f"{self.kind}-{self.id}"
        return {
            "id": self.id, "date": stamp, "date_gmt": stamp, "modified": stamp, "modified_gmt": stamp,
            "slug": slug, "status": self.status, "type": self.kind,
            "link": f"{site}/{slug}/" if self.kind == "page" else f"{site}/blog/{slug}/",
            "title": {"rendered": html.escape(self.title, quote=False).replace("'", "&#8217;")},
            "content": {"rendered": self.content, "protected": False},
            "excerpt": {"rendered": "", "protected": False},
        }


class WordPressSimulator(ThreadedHTTPServer):
    thread_name = "wp-sim"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], Item] = {}
        self._clock = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
        self._fault: str | None = None
        self.slow_s = 5.0
        self.huge_bytes = 30 * 1024 * 1024
        self.requests: list[tuple[str, dict[str, str]]] = []

    # -- content ----------------------------------------------------------------------------------

    def put(self, kind: str, item_id: int, title: str, content: str, *, status: str = "publish") -> datetime:
        """Create or edit a page or post; its modified time moves one minute past everything else."""
        assert kind in ("page", "post")
        with self._lock:
            self._clock += timedelta(minutes=1)
            self._items[(kind, item_id)] = Item(kind, item_id, title, content, self._clock, status)
            return self._clock

    def advance(self, delta: timedelta) -> None:
        """Let time pass on the site (the next edit is ``delta`` later)."""
        with self._lock:
            self._clock += delta

    def delete(self, kind: str, item_id: int) -> None:
        with self._lock:
            del self._items[(kind, item_id)]

    def set_fault(self, fault: str | None) -> None:
        assert fault is None or fault in FAULTS, fault
        with self._lock:
            self._fault = fault

    def requests_to(self, route: str) -> list[dict[str, str]]:
        """The query strings of the requests made to ``route`` (``pages`` or ``posts``)."""
        with self._lock:
            return [q for path, q in self.requests if path.endswith(f"/wp/v2/{route}")]

    # -- the wire ---------------------------------------------------------------------------------

    @property
    def site_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/wp-json/", self._index)
        app.router.add_get("/wp-json/wp/v2/{route}", self._collection)
        app.router.add_get("/wp-json/{tail:.*}", self._no_route)
        app.router.add_get("/{tail:.*}", self._site_page)
        return app

    @staticmethod
    def _error(code: str, message: str, status: int) -> web.Response:
        return web.json_response({"code": code, "message": message, "data": {"status": status}}, status=status)

    async def _faulty(self, request: web.Request) -> web.StreamResponse | None:
        with self._lock:
            fault = self._fault
            self.requests.append((request.path, dict(request.query)))
        if fault is None:
            return None
        if fault == "html":
            return web.Response(text="<!doctype html><html><head><title>Benvenuti</title></head><body><h1>Il nostro "
                                     "sito</h1></body></html>", content_type="text/html")
        if fault == "not_found":
            return web.Response(text="<html><body><h1>404 Not Found</h1></body></html>", status=404,
                                content_type="text/html")
        if fault == "garbage":
            return web.Response(body=b'[{"id": 1, "title": {"rendered": "Or', content_type="application/json")
        if fault == "wrong_shape":
            return web.json_response({"hello": "world"})
        if fault == "unauthorized":
            return self._error("rest_not_logged_in", "You are not currently logged in.", 401)
        if fault == "forbidden":
            return self._error("rest_forbidden", "Sorry, you are not allowed to do that.", 403)
        if fault == "server_error":
            return web.Response(text="<h1>Error establishing a database connection</h1>", status=500,
                                content_type="text/html")
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
            return None
        if fault == "redirect_loop":
            raise web.HTTPFound(location=str(request.rel_url))
        if fault == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json", "X-WP-TotalPages": "1"})
            await response.prepare(request)
            await response.write(b'[{"id": 1, "content": {"rendered": "')
            block = b"x" * 65536
            for _ in range(self.huge_bytes // len(block)):
                await response.write(block)
            await response.write(b'"}}]')
            await response.write_eof()
            return response
        raise AssertionError(fault)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return await self._faulty(request) or web.json_response(
            {"name": "Sito di prova", "url": self.site_url, "namespaces": ["oembed/1.0", "wp/v2"]})

    async def _no_route(self, request: web.Request) -> web.StreamResponse:
        return await self._faulty(request) or self._error(
            "rest_no_route", "No route was found matching the URL and request method.", 404)

    async def _site_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body><p>Una pagina del sito.</p></body></html>", content_type="text/html")

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        faulty = await self._faulty(request)
        if faulty is not None:
            return faulty
        kind = KINDS.get(request.match_info["route"])
        if kind is None:
            return self._error("rest_no_route", "No route was found matching the URL and request method.", 404)
        q = request.query
        try:
            per_page = int(q.get("per_page", "10"))
            page = int(q.get("page", "1"))
            after = datetime.fromisoformat(q["modified_after"]) if "modified_after" in q else None
            include = {int(x) for x in q["include"].split(",") if x} if q.get("include") else None
        except ValueError:
            return self._error("rest_invalid_param", "Invalid parameter(s).", 400)
        if not 1 <= per_page <= 100 or page < 1:
            return self._error("rest_invalid_param", "Invalid parameter(s): per_page", 400)
        if after is not None and after.tzinfo is None:
            after = after.replace(tzinfo=timezone.utc)
        with self._lock:
            items = [i for i in self._items.values() if i.kind == kind and i.status == "publish"
                     and (after is None or i.modified > after) and (include is None or i.id in include)]
        items.sort(key=lambda i: (i.modified, i.id), reverse=True)
        total = len(items)
        pages = max(1, -(-total // per_page)) if total else 0
        if page > max(pages, 1):
            return self._error("rest_post_invalid_page_number",
                               "The page number requested is larger than the number of pages available.", 400)
        chosen = items[(page - 1) * per_page:page * per_page]
        fields = [f for f in q.get("_fields", "").split(",") if f]
        body = [item.as_json(self.site_url) for item in chosen]
        if fields:
            body = [{k: v for k, v in row.items() if k in fields} for row in body]
        return web.Response(body=orjson.dumps(body), content_type="application/json", charset="UTF-8",
                            headers={"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)})
