"""Anthropic's Messages API, ``POST /v1/messages``: JSON or SSE, prompt-cache accounting, errors.

The stream is the documented sequence: ``message_start`` (usage with ``cache_creation_input_tokens``
and ``cache_read_input_tokens``), ``ping``, a ``thinking`` block (``thinking_delta``…,
``signature_delta``) when the reply thinks, a ``text`` block (``text_delta``…), ``message_delta``
(stop_reason, cumulative usage), ``message_stop``; an ``error`` event mid-stream when scripted.
With the web search tool and a reply that searches (``Reply.searches``), each search is a
``server_tool_use`` block (its query as ``input_json_delta``) and a ``web_search_tool_result``
block before the text, the text block opens with a ``citations_delta`` per cited page, and usage
counts ``server_tool_use.web_search_requests`` (``web_search.py``).

Cache accounting follows the API's rule: a block with ``cache_control`` ends a prefix (tools,
system, then messages); a prefix seen before is read from the cache, a new one is written, and
prefixes shorter than ``min_cache_tokens`` are never cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from aiohttp import web

from bench.ai_simulator import web_search
from bench.ai_simulator.state import AIState, Reply
from bench.ai_simulator.text import chunks, tokens
from bench.ai_simulator.wire import EventStream, Rejected, bearer, check_key, handler, new_id

# The API version the pinned SDK sends; it refuses sampling parameters (temperature, top_p, top_k).
NO_SAMPLING_VERSIONS = frozenset({"2026-10-21"})
MAX_CACHE_BREAKPOINTS = 4

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def render_error(exc: Rejected) -> web.Response:
    kind = exc.kind or _ERROR_TYPES.get(exc.status, "api_error")
    request_id = new_id("req_sim")
    headers = {"request-id": request_id}
    if exc.retry_after is not None:
        headers["retry-after"] = f"{exc.retry_after:g}"
    body = {"type": "error", "error": {"type": kind, "message": exc.message}, "request_id": request_id}
    return web.json_response(body, status=exc.status, headers=headers)


def _blocks(content: Any, where: str) -> list[tuple[str, bool]]:
    """(text, has cache_control) for a system or message ``content`` (a string or text blocks)."""
    if isinstance(content, str):
        return [(content, False)]
    if not isinstance(content, list) or not content:
        raise Rejected(400, f"{where}: expected a string or a non-empty list of content blocks")
    out = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise Rejected(400, f"{where}.{i}: only text blocks are simulated")
        control = block.get("cache_control")
        if control is not None and control.get("type") != "ephemeral":
            raise Rejected(400, f"{where}.{i}.cache_control.type: Input should be 'ephemeral'")
        out.append((block["text"], control is not None))
    return out


def _validate(request: web.Request, body: dict[str, Any]) -> tuple[str, int, list[tuple[str, bool]], str]:
    version = request.headers.get("anthropic-version")
    if not version:
        raise Rejected(400, "anthropic-version: header is required")
    if version in NO_SAMPLING_VERSIONS:
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                raise Rejected(400, f"{name}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Rejected(400, "model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise Rejected(400, "max_tokens: Input should be a positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Rejected(400, "messages: at least one message is required")
    blocks: list[tuple[str, bool]] = []
    if body.get("system") is not None:
        blocks += _blocks(body["system"], "system")
    last_user = ""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise Rejected(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        part = _blocks(message.get("content"), f"messages.{i}.content")
        blocks += part
        if message["role"] == "user":
            last_user = "".join(text for text, _ in part)
    if sum(1 for _, cached in blocks if cached) > MAX_CACHE_BREAKPOINTS:
        raise Rejected(400, f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided.")
    if body.get("cache_control") is not None:  # automatic caching: the breakpoint is the last block
        blocks[-1] = (blocks[-1][0], True)
    return model, max_tokens, blocks, last_user


def cache_usage(state: AIState, model: str, blocks: list[tuple[str, bool]], tools: Any = None) -> dict[str, int]:
    counts = [tokens(text) for text, _ in blocks]
    total = sum(counts)
    with state.lock:
        minimum = state.min_cache_tokens
    prefixes: list[tuple[str, int]] = []  # (key, tokens) of each cacheable prefix, shortest first
    digest = hashlib.sha256(model.encode())
    if tools:  # the tools come first in the prefix: other tools, another cache entry
        digest.update(b"\x01" + json.dumps(tools, sort_keys=True).encode())
    running = 0
    for (text, cached), count in zip(blocks, counts, strict=True):
        digest.update(b"\x00" + text.encode())
        running += count
        if cached and running >= minimum:
            prefixes.append((digest.copy().hexdigest(), running))
    read = write = 0
    if prefixes:
        hit = state.cache_lookup([key for key, _ in prefixes])
        read = prefixes[hit][1] if hit >= 0 else 0
        write = prefixes[-1][1] - read
    return {"input_tokens": total - read - write, "cache_creation_input_tokens": write, "cache_read_input_tokens": read}


def _plan(reply: Reply, max_tokens: int) -> tuple[list[str], list[str], str]:
    """(thinking deltas, text deltas, stop_reason), cut at max_tokens as the API would."""
    thinking = chunks(reply.thinking) if reply.thinking else []
    text = chunks(reply.text)
    stop = reply.stop_reason or "end_turn"
    if len(thinking) + len(text) > max_tokens:
        room = max(max_tokens - len(thinking), 0)
        thinking, text, stop = thinking[:max_tokens], text[:room], "max_tokens"
    return thinking, text, stop


def _signature(thinking: list[str]) -> str:
    return base64.b64encode(hashlib.sha256("".join(thinking).encode()).digest() * 2).decode()


def routes(state: AIState) -> list[web.RouteDef]:
    async def messages(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        check_key(state, "anthropic", request.headers.get("x-api-key") or bearer(request))
        model, max_tokens, blocks, last_user = _validate(request, body)
        tool = web_search.tool_from(body)
        usage = cache_usage(state, model, blocks, body.get("tools"))
        reply = state.next_reply(last_user)
        thinking, text, stop = _plan(reply, max_tokens)
        searches = web_search.run(state, tool, reply.searches) if tool is not None and reply.searches else []
        pages = web_search.cited(searches)
        output_tokens = len(thinking) + len(text) + web_search.query_tokens(searches)
        final_usage: dict[str, Any] = {**usage, "input_tokens": usage["input_tokens"] + web_search.result_tokens(searches),
                                       "output_tokens": output_tokens}
        if tool is not None:
            final_usage["server_tool_use"] = {"web_search_requests": web_search.counted(searches), "web_fetch_requests": 0}
        message_id = new_id("msg_sim")
        request_id = new_id("req_sim")
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if thinking:
                content.append({"type": "thinking", "thinking": "".join(thinking), "signature": _signature(thinking)})
            for search in searches:
                content += [web_search.tool_use_block(search), web_search.result_block(search)]
            content.append({"type": "text", "text": "".join(text),
                            **({"citations": [web_search.citation(p) for p in pages]} if pages else {})})
            return web.json_response({
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None,
                "usage": {**final_usage, "service_tier": "standard"},
            }, headers={"request-id": request_id})

        with state.lock:
            delay = state.token_delay_s
        record = state.open_stream("anthropic", model)
        stream = await EventStream.open(request, record, delay, {"request-id": request_id})

        async def send(event: str, data: dict[str, Any]) -> None:
            await stream.send(json.dumps({"type": event, **data}), event=event)

        async def ping() -> None:
            await send("ping", {})

        async def produce(out: EventStream) -> None:
            await send("message_start", {"message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1, "service_tier": "standard"},
            }})
            await ping()
            if reply.stall_s > 0:
                await out.stall(reply.stall_s, ping)
            index = 0
            if thinking:
                await send("content_block_start", {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                for piece in thinking:
                    await out.delta_pause()
                    await send("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}})
                await send("content_block_delta", {"index": index, "delta": {"type": "signature_delta", "signature": _signature(thinking)}})
                await send("content_block_stop", {"index": index})
                index += 1
            for search in searches:
                await send("content_block_start", {"index": index, "content_block": {
                    **web_search.tool_use_block(search), "input": {}}})
                for part in web_search.query_json(search):
                    await send("content_block_delta", {"index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": part}})
                await send("content_block_stop", {"index": index})
                await out.delta_pause()  # the search runs
                await send("content_block_start", {"index": index + 1, "content_block": web_search.result_block(search)})
                await send("content_block_stop", {"index": index + 1})
                index += 2
            await send("content_block_start", {"index": index, "content_block": {
                "type": "text", "text": "", **({"citations": []} if pages else {})}})
            for page in pages:
                await send("content_block_delta", {"index": index, "delta": {"type": "citations_delta",
                                                                             "citation": web_search.citation(page)}})
            for n, piece in enumerate(text):
                if reply.error_after is not None and n == reply.error_after:
                    await send("error", {"error": {"type": reply.error_type, "message": "Overloaded"}})
                    return
                await out.delta_pause()
                await send("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
                out.record.deltas_sent += 1
            await send("content_block_stop", {"index": index})
            await send("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": final_usage})
            await send("message_stop", {})

        return await stream.run(produce)

    return [web.post("/v1/messages", handler(state, "anthropic", render_error, messages))]
