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
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from bench.ai_simulator import anthropic_api, openai_api, voyage_api
from bench.ai_simulator.state import AIState, Api, Fault, RecordedRequest, Reply, StreamRecord, WebPage

T = TypeVar("T")


class AISimulator:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.state = AIState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(anthropic_api.routes(self.state))
        app.add_routes(openai_api.routes(self.state))
        app.add_routes(voyage_api.routes(self.state))
        return app

    def start(self) -> AISimulator:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name=f"ai-sim:{self._port}", daemon=True)
        self._thread.start()
        try:
            self._call(self._setup(sock), timeout=10.0)
        except BaseException:
            sock.close()
            self.stop()
            raise
        return self

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()

    async def _setup(self, sock: socket.socket) -> None:
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()

    async def _teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if thread.is_alive():
                self._call(self._teardown(), timeout=15.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=15.0)
            self._loop = None
            self._thread = None

    def __enter__(self) -> AISimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- addresses --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
