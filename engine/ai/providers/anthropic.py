"""Claude through Anthropic's official SDK: the Messages API, streamed, with prompt caching.

The stable system blocks are sent as text blocks, and a block with ``cache=True`` carries
``cache_control: {"type": "ephemeral"}`` so the prefix up to it is billed at the cache rates on
the next call. Only ``text_delta`` events become :class:`TextDelta`: thinking blocks
(``thinking_delta``, ``signature_delta``) are never shown to customers or agents.

Web search is Anthropic's server tool (``web_search_20250305``): when a request carries a
:class:`WebSearch`, the tool goes with it (``allowed_domains``, ``max_uses``) and its instructions
close the system prompt. The API runs the searches inside the same stream: a ``server_tool_use``
block (its query as ``input_json_delta``, never shown) becomes :class:`WebSearchStarted`, the
``web_search_tool_result`` block (encrypted page content) is skipped, and each
``web_search_result_location`` in a text block's ``citations_delta`` becomes a
:class:`WebCitation`. ``usage.server_tool_use.web_search_requests`` counts what is billed.

Retries are the fallback chain's business, so the SDK's own are off (``max_retries=0``). The
sampling temperature is not sent: the pinned SDK (API version 2026-10-21) no longer has it and the
API refuses it with a 400. The SDK is imported when a provider is built (it takes ~1 s and
brings its own aiohttp transport), so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx2

from engine.ai.providers.base import (ChatEvent, ChatRequest, ProviderError, TextDelta, Usage, WebCitation,
                                      WebSearchStarted)
from engine.ai.providers.errors import redact, retry_after, status_error, transport_error

if TYPE_CHECKING:
    import anthropic

DEFAULT_BASE_URL = "https://api.anthropic.com"
WEB_SEARCH_TOOL = "web_search_20250305"


class AnthropicChat:
    web_search = True  # the API runs web searches itself (a server tool)

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout_s: float = 60.0, connect_timeout_s: float = 5.0,
                 name: str = "anthropic", client: anthropic.AsyncAnthropic | None = None) -> None:
        import anthropic

        self._sdk = anthropic
        self.name = name
        self._api_key = api_key
        # read timeout: the longest silence tolerated between two stream events (the API pings)
        self._client = client or anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url or DEFAULT_BASE_URL, max_retries=0,
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s))

    async def aclose(self) -> None:
        await self._client.close()

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.text} for m in request.messages],
        }
        system = [
            {"type": "text", "text": block.text, **({"cache_control": {"type": "ephemeral"}} if block.cache else {})}
            for block in request.system
        ]
        search = request.web_search
        if search is not None and search.allowed_domains:
            params["tools"] = [{"type": WEB_SEARCH_TOOL, "name": "web_search", "max_uses": search.max_uses,
                                "allowed_domains": list(search.allowed_domains)}]
            if search.instructions:  # last: the cached prefix before it stays as it was
                system.append({"type": "text", "text": search.instructions})
        if system:
            params["system"] = system
        user_id = request.metadata.get("user_id")
        if user_id:  # an opaque id for abuse detection; never a name or a phone number
            params["metadata"] = {"user_id": user_id}
        return params

    def _error(self, exc: anthropic.AnthropicError) -> ProviderError:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return transport_error(self.name, "timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return transport_error(self.name, "connection failed")
        if isinstance(exc, sdk.APIStatusError):
            mid_stream = exc.status_code == 200  # an SSE error event inside a 200 response
            detail = exc.api_message or (None if isinstance(exc.body, Mapping) else str(exc.body or "")) or None
            headers: Mapping[str, str] = exc.response.headers
            return status_error(self.name, None if mid_stream else exc.status_code, exc.type, detail,
                                secrets=[self._api_key], retry_after_s=retry_after(headers))
        return ProviderError(f"{self.name}: {redact(type(exc).__name__ + ': ' + str(exc), [self._api_key])}",
                             provider=self.name, retryable=False)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            events = await self._client.messages.create(**self._params(request), stream=True)
        except self._sdk.AnthropicError as exc:
            raise self._error(exc) from exc
        usage: dict[str, int] = {}
        stop_reason: str | None = None
        model = request.model
        complete = False
        try:
            async for event in events:
                if event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        yield TextDelta(delta.text)
                    elif delta.type == "citations_delta" and delta.citation.type == "web_search_result_location":
                        cited = delta.citation
                        yield WebCitation(url=cited.url, title=cited.title or "", cited_text=cited.cited_text)
                    # thinking_delta, signature_delta, input_json_delta (a search's query): not for people
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "server_tool_use" and block.name == "web_search":
                        yield WebSearchStarted()
                    # web_search_tool_result: encrypted page content, for the model only
                elif event.type == "message_start":
                    model = event.message.model or model
                    usage = _counts(event.message.usage, usage)
                elif event.type == "message_delta":
                    usage = _counts(event.usage, usage)  # cumulative: later counts replace earlier ones
                    stop_reason = event.delta.stop_reason or stop_reason
                elif event.type == "message_stop":
                    complete = True
        except self._sdk.AnthropicError as exc:
            raise self._error(exc) from exc
        except httpx2.TimeoutException as exc:  # raised while reading the body, not wrapped by the SDK
            raise transport_error(self.name, "timed out while streaming") from exc
        except httpx2.TransportError as exc:
            raise transport_error(self.name, "connection lost while streaming") from exc
        finally:
            # On aclose() or cancellation this is what stops the HTTP stream (and the billing).
            await events.close()
        if not complete:
            raise ProviderError(f"{self.name}: the stream ended before message_stop", provider=self.name, retryable=True)
        yield Usage(model=model, input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0),
                    cache_write_tokens=usage.get("cache_creation_input_tokens", 0),
                    cache_read_tokens=usage.get("cache_read_input_tokens", 0), stop_reason=stop_reason,
                    web_search_requests=usage.get("web_search_requests", 0))


def _counts(source: object, previous: dict[str, int]) -> dict[str, int]:
    out = dict(previous)
    for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = getattr(source, name, None)
        if isinstance(value, int):
            out[name] = value
    searches = getattr(getattr(source, "server_tool_use", None), "web_search_requests", None)
    if isinstance(searches, int):
        out["web_search_requests"] = searches
    return out
