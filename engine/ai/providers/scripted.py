"""A chat provider that answers with scripted text at no cost and no latency: for demos, tests of
the layers above the providers, and the pipeline benchmark's "zero-latency local provider" (the
real providers are exercised against local servers speaking their wire protocols)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from engine.ai.providers.base import ChatEvent, ChatRequest, TextDelta, Usage


class ScriptedChat:
    web_search = False

    def __init__(self, reply: str | Callable[[ChatRequest], str], *, name: str = "scripted",
                 delay_s: float = 0.0) -> None:
        self.name = name
        self._reply = reply
        self.delay_s = delay_s
        self.requests: list[ChatRequest] = []
        self.opened = 0
        self.closed_early = 0
        self.finished = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.requests.append(request)
        self.opened += 1
        text = self._reply(request) if callable(self._reply) else self._reply
        done = False
        try:
            for piece in re.findall(r"\S+\s*", text):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield TextDelta(piece)
            done = True
            self.finished += 1
            prompt = sum(len(b.text) for b in request.system) + sum(len(m.text) for m in request.messages)
            yield Usage(model=request.model or self.name, input_tokens=prompt // 4, output_tokens=len(text) // 4,
                        stop_reason="end_turn")
        finally:
            if not done:
                self.closed_early += 1
