"""What the AI simulator remembers and what a test scripts: replies, faults, records, caches.

All of it is read and written from two threads (the server's loop and the test), so every access
goes through ``AIState.lock`` and records are handed out as copies.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["anthropic", "openai", "voyage"]
ReasoningStyle = Literal["field", "inline"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer.

    ``thinking`` is streamed before the text (Anthropic: a thinking block with a signature;
    OpenAI-compatible: ``reasoning_content`` deltas, or ``<think>…</think>`` inside the content
    with ``reasoning_style="inline"``, as llama.cpp and Ollama do without a reasoning parser).
    ``stall_s`` keeps the stream open and silent (pings only) before the first delta.
    ``error_after`` sends a mid-stream error event after that many text deltas.
    ``searches``: the queries the model runs, in order, when the request offers Anthropic's web
    search tool (ignored otherwise, and by the other APIs); the answer then cites the best pages
    found (``AIState.web_pages`` on the allowed domains).
    """

    text: str
    thinking: str | None = None
    reasoning_style: ReasoningStyle = "field"
    stop_reason: str | None = None  # None: end_turn / stop, or max_tokens / length when cut
    stall_s: float = 0.0
    error_after: int | None = None
    error_type: str = "overloaded_error"
    searches: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebPage:
    """A page of the simulated web, found by a search that shares words with it."""

    url: str
    title: str
    text: str
    page_age: str | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    status: int
    remaining: int
    api: Api | None = None
    retry_after: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    api: Api
    path: str
    body: Any
    headers: dict[str, str]
    status: int = 0  # filled in when answered
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class StreamRecord:
    """One streamed answer, seen from the server: how far it got and how it ended."""

    api: Api
    model: str
    deltas_sent: int = 0
    finished: bool = False  # the last event was written
    closed_by_client: bool = False  # the client went away before the last event


class AIState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: deque[Reply] = deque()
        self.default_reply: Reply | None = None  # None: echo the last user message
        self.faults: list[Fault] = []
        self.latency_s = 0.0
        self.token_delay_s = 0.0
        self.api_keys: dict[Api, str | None] = {"anthropic": None, "openai": None, "voyage": None}
        self.min_cache_tokens = 1024
        self.embedding_dim = 64
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []
        self.cached_prefixes: set[str] = set()
        self.web_pages: list[WebPage] = []
        self.generation = 0  # bumped by clear(): requests begun before it take nothing scripted after it

    def next_reply(self, prompt: str) -> Reply:
        with self.lock:
            if self.replies:
                return self.replies.popleft()
            if self.default_reply is not None:
                return self.default_reply
        return Reply(text=f"You said: {prompt}" if prompt else "Hello.")

    def take_fault(self, api: Api) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.api is None or fault.api == api:
                    if fault.remaining <= 1:
                        del self.faults[index]
                    else:
                        self.faults[index] = Fault(fault.status, fault.remaining - 1, fault.api, fault.retry_after, fault.message)
                    return fault
        return None

    def record(self, request: RecordedRequest) -> RecordedRequest:
        with self.lock:
            self.requests.append(request)
        return request

    def answered(self, request: RecordedRequest, status: int) -> None:
        with self.lock:
            for i in range(len(self.requests) - 1, -1, -1):
                if self.requests[i] is request:  # by identity: a reset may have emptied the list meanwhile
                    self.requests[i] = dataclasses.replace(request, status=status)
                    return

    def open_stream(self, api: Api, model: str) -> StreamRecord:
        record = StreamRecord(api, model)
        with self.lock:
            self.streams.append(record)
        return record

    def cache_lookup(self, keys: list[str]) -> int:
        """Index of the longest prefix key already cached (-1: none); caches them all afterwards."""
        with self.lock:
            hit = max((i for i, k in enumerate(keys) if k in self.cached_prefixes), default=-1)
            self.cached_prefixes.update(keys)
        return hit

    def clear(self) -> None:
        with self.lock:
            self.generation += 1
            self.replies.clear()
            self.default_reply = None
            self.faults.clear()
            self.latency_s = 0.0
            self.token_delay_s = 0.0
            self.api_keys = {"anthropic": None, "openai": None, "voyage": None}
            self.requests.clear()
            self.streams.clear()
            self.cached_prefixes.clear()
            self.web_pages.clear()
