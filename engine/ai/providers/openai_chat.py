"""OpenAI's Chat Completions through the official SDK, and so any OpenAI-compatible server (vLLM,
llama.cpp, Ollama, …) at its ``base_url``.

The system blocks become one system message (these servers cache by prefix on their own:
OpenAI reports the cached part as ``prompt_tokens_details.cached_tokens``). Usage comes from the
last chunk thanks to ``stream_options.include_usage``; a server that sends none gets an estimate,
flagged as such. Reasoning never reaches people: ``reasoning_content``/``reasoning`` deltas are
ignored, and a leading ``<think>…</think>`` in the content (reasoning models served without a
reasoning parser) is cut out. The SDK is imported when a provider is built, not with this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx2

from engine.ai.providers.base import ChatEvent, ChatRequest, ProviderError, TextDelta, Usage
from engine.ai.providers.errors import redact, retry_after, status_error, transport_error

if TYPE_CHECKING:
    import openai

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# A local server may need no key, but the SDK insists on one.
_NO_KEY = "not-needed"


class OpenAIChat:
    web_search = False  # a request's WebSearch is ignored: the model answers from the documents

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 60.0,
                 connect_timeout_s: float = 5.0, name: str = "openai",
                 max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens",
                 send_temperature: bool = True, client: openai.AsyncOpenAI | None = None) -> None:
        """``max_tokens_field``: OpenAI's reasoning models want ``max_completion_tokens``; some
        older compatible servers only know ``max_tokens``. ``send_temperature``: off for models
        that refuse a sampling temperature."""
        import openai

        self._sdk = openai
        self.name = name
        self._api_key = api_key
        self._max_tokens_field = max_tokens_field
        self._send_temperature = send_temperature
        self._client = client or openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY, base_url=base_url or DEFAULT_BASE_URL, max_retries=0,
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s))

    async def aclose(self) -> None:
        await self._client.close()

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        system = "\n\n".join(block.text for block in request.system if block.text)
        if system:
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.text} for m in request.messages]
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            self._max_tokens_field: request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._send_temperature:
            params["temperature"] = request.temperature
        return params

    def _error(self, exc: openai.OpenAIError) -> ProviderError:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return transport_error(self.name, "timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return transport_error(self.name, "connection failed")
        if isinstance(exc, sdk.APIError):
            body = exc.body
            detail = body.get("message") if isinstance(body, Mapping) else None
            kind = exc.code or exc.type
            if isinstance(exc, sdk.APIStatusError):
                return status_error(self.name, exc.status_code, kind, detail or exc.message, secrets=[self._api_key],
                                    retry_after_s=retry_after(exc.response.headers))
            return status_error(self.name, None, exc.type or "stream_error", detail or exc.message, secrets=[self._api_key])
        return ProviderError(f"{self.name}: {redact(type(exc).__name__ + ': ' + str(exc), [self._api_key])}",
                             provider=self.name, retryable=False)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            chunks = await self._client.chat.completions.create(**self._params(request))
        except self._sdk.OpenAIError as exc:
            raise self._error(exc) from exc
        reasoning = InlineReasoning()
        usage: Any = None
        finish: str | None = None
        model = request.model
        written = 0
        try:
            async for chunk in chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices[:1]:
                    finish = choice.finish_reason or finish
                    if choice.delta.content:
                        text = reasoning.feed(choice.delta.content)
                        if text:
                            written += len(text)
                            yield TextDelta(text)
        except self._sdk.OpenAIError as exc:
            raise self._error(exc) from exc
        except httpx2.TimeoutException as exc:
            raise transport_error(self.name, "timed out while streaming") from exc
        except httpx2.TransportError as exc:
            raise transport_error(self.name, "connection lost while streaming") from exc
        finally:
            await chunks.close()
        tail = reasoning.flush()
        if tail:
            written += len(tail)
            yield TextDelta(tail)
        if usage is None:
            prompt = sum(len(m["content"]) for m in self._params(request)["messages"])
            yield Usage(model=model, input_tokens=(prompt + 3) // 4, output_tokens=(written + 3) // 4,
                        stop_reason=finish, estimated=True)
            return
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details is not None else 0
        written_to_cache = (details.cache_write_tokens or 0) if details is not None else 0
        yield Usage(model=model, input_tokens=max(usage.prompt_tokens - cached - written_to_cache, 0),
                    output_tokens=usage.completion_tokens, cache_write_tokens=written_to_cache,
                    cache_read_tokens=cached, stop_reason=finish)


class InlineReasoning:
    """Drops a leading ``<think>…</think>`` block from streamed content, whatever the chunking."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self._state: Literal["start", "inside", "after", "text"] = "start"
        self._buffer = ""

    def feed(self, piece: str) -> str:
        if self._state == "text":
            return piece
        self._buffer += piece
        if self._state == "start":
            head = self._buffer.lstrip()
            if len(head) < len(self.OPEN) and self.OPEN.startswith(head):
                return ""  # could still become "<think>"
            if not head.startswith(self.OPEN):
                self._state = "text"
                out, self._buffer = self._buffer, ""
                return out
            self._state, self._buffer = "inside", head[len(self.OPEN):]
        if self._state == "inside":
            end = self._buffer.find(self.CLOSE)
            if end < 0:
                self._buffer = self._buffer[-(len(self.CLOSE) - 1):]  # all but a possible partial "</think>"
                return ""
            self._state, self._buffer = "after", self._buffer[end + len(self.CLOSE):]
        # "after": drop the blank lines between the reasoning and the answer
        out, self._buffer = self._buffer.lstrip(), ""
        if out:
            self._state = "text"
        return out

    def flush(self) -> str:
        out = self._buffer if self._state == "start" else ""
        self._buffer = ""
        return out
