"""``AISimulator``: Anthropic, OpenAI(-compatible) and Voyage on one local port, on its own thread.

    with AISimulator() as sim:
        sim.script("Ciao! Come posso aiutarti?")
        client = AsyncAnthropic(api_key="k", base_url=sim.anthropic_base_url)
        ...
        assert sim.streams[-1].finished

Each official SDK is pointed at its base URL (``anthropic_base_url``, ``openai_base_url``,
``voyage_base_url``) and speaks its real wire protocol to it. The server runs on a thread and
loop of its own (like ``bench.simulator.Simulator``) so a test's loop can drive it; state is read
back as copies.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bench.ai_simulator import anthropic_api, openai_api, voyage_api
from bench.http_double import ThreadedHTTPServer
from bench.ai_simulator.state import AIState, Api, Fault, RecordedRequest, Reply, StreamRecord, WebPage


class AISimulator(ThreadedHTTPServer):
    thread_name = "ai-sim"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.state = AIState()

    # -- lifecycle --------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(anthropic_api.routes(self.state))
        app.add_routes(openai_api.routes(self.state))
        app.add_routes(voyage_api.routes(self.state))
        return app

    # -- addresses --------------------------------------------------------------------------------

    @property
    def anthropic_base_url(self) -> str:
        """For ``AsyncAnthropic(base_url=…)``: the SDK appends ``/v1/messages``."""
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        """For ``AsyncOpenAI(base_url=…)`` (like ``https://api.openai.com/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def voyage_base_url(self) -> str:
        """For Voyage clients (like ``https://api.voyageai.com/v1``)."""
        return f"{self.base_url}/voyage/v1"

    # -- script -----------------------------------------------------------------------------------

    def script(self, *replies: str | Reply) -> None:
        """Queue replies, consumed one per chat request (any API); when empty, the default reply."""
        with self.state.lock:
            self.state.replies.extend(r if isinstance(r, Reply) else Reply(text=r) for r in replies)

    def set_default_reply(self, reply: str | Reply | None) -> None:
        """What a chat request gets with nothing scripted; None echoes the last user message."""
        with self.state.lock:
            self.state.default_reply = Reply(text=reply) if isinstance(reply, str) else reply

    def fail_next(self, count: int = 1, status: int = 529, *, api: Api | None = None, retry_after: float | None = None,
                  message: str | None = None) -> None:
        """The next ``count`` requests (to ``api``, or to any) fail with ``status`` in that API's format."""
        with self.state.lock:
            self.state.faults.append(Fault(status, count, api, retry_after, message))

    def set_latency(self, seconds: float) -> None:
        """Delay before any response starts (headers included)."""
        with self.state.lock:
            self.state.latency_s = seconds

    def set_token_delay(self, seconds: float) -> None:
        """Delay before each streamed delta."""
        with self.state.lock:
            self.state.token_delay_s = seconds

    def require_key(self, api: Api, key: str | None) -> None:
        """Refuse (401) any other key for ``api``; None accepts any non-empty key."""
        with self.state.lock:
            self.state.api_keys[api] = key

    def set_min_cache_tokens(self, value: int) -> None:
        with self.state.lock:
            self.state.min_cache_tokens = value

    def set_embedding_dim(self, value: int) -> None:
        with self.state.lock:
            self.state.embedding_dim = value

    def add_web_pages(self, *pages: WebPage) -> None:
        """Pages a web search (Anthropic's server tool) can find, on the request's allowed domains."""
        with self.state.lock:
            self.state.web_pages.extend(pages)

    def reset(self) -> None:
        """Forget records, script, faults, delays, keys, caches and web pages."""
        self.state.clear()

    # -- records ----------------------------------------------------------------------------------

    def requests(self, api: Api | None = None) -> list[RecordedRequest]:
        with self.state.lock:
            return [r for r in self.state.requests if api is None or r.api == api]

    @property
    def streams(self) -> list[StreamRecord]:
        with self.state.lock:
            return [copy.copy(s) for s in self.state.streams]

    @property
    def closed_early(self) -> int:
        """Streams the client closed before their last event."""
        with self.state.lock:
            return sum(1 for s in self.state.streams if s.closed_by_client)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        """``wait_until`` for async tests: polls without blocking the caller's loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(interval)
        return True
