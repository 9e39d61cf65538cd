"""OpenAI's ``POST /v1/chat/completions`` (JSON, or SSE ``data:`` chunks ending in ``data: [DONE]``)
and ``POST /v1/embeddings``, with OpenAI's error bodies.

Streams behave as OpenAI and the OpenAI-compatible servers do: a first chunk with the role, the
reasoning (``reasoning_content`` deltas as vLLM sends them, or ``<think>…</think>`` inside the
content as llama.cpp/Ollama do without a reasoning parser), the content deltas, a chunk with
``finish_reason``, and, with ``stream_options.include_usage``, a last chunk with no choices and
the usage (``prompt_tokens_details.cached_tokens`` for a prefix seen before).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from bench.ai_simulator.state import AIState, Reply
from bench.ai_simulator.text import chunks, float32_base64, tokens, vector
from bench.ai_simulator.wire import EventStream, Rejected, bearer, check_key, handler, new_id

_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}
_ROLES = ("system", "developer", "user", "assistant", "tool")


def _masked(key: str) -> str:
    # OpenAI names the refused key by its ends; the simulator does too, so callers' redaction is tested.
    return f"{key[:3]}{'*' * max(len(key) - 7, 4)}{key[-4:]}" if len(key) > 8 else "****"


def render_error(exc: Rejected) -> web.Response:
    kind, code = _ERRORS.get(exc.status, ("server_error", None))
    headers = {"x-request-id": new_id("req_")}
    if exc.retry_after is not None:
        headers["retry-after"] = f"{exc.retry_after:g}"
    body = {"error": {"message": exc.message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=exc.status, headers=headers)


def _authorize(state: AIState, request: web.Request) -> None:
    presented = bearer(request)
    try:
        check_key(state, "openai", presented)
    except Rejected:
        shown = _masked(presented) if presented else "none"
        raise Rejected(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.") from None


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise Rejected(400, f"Invalid value at '{where}[{i}]': only text parts are simulated")
            parts.append(part["text"])
        return "".join(parts)
    raise Rejected(400, f"Invalid type for '{where}': expected a string or an array of content parts")


def _cached_tokens(state: AIState, model: str, texts: list[str]) -> int:
    """OpenAI caches automatically: the longest message-aligned prefix seen before, past the minimum."""
    with state.lock:
        minimum = state.min_cache_tokens
    digest = hashlib.sha256(f"openai\x00{model}".encode())
    prefixes: list[tuple[str, int]] = []
    running = 0
    for text in texts[:-1]:  # the newest message is never part of a cached prefix
        digest.update(b"\x00" + text.encode())
        running += tokens(text)
        if running >= minimum:
            prefixes.append((digest.copy().hexdigest(), running))
    if not prefixes:
        return 0
    hit = state.cache_lookup([key for key, _ in prefixes])
    return prefixes[hit][1] if hit >= 0 else 0


def _plan(reply: Reply, limit: int | None) -> tuple[list[str], list[str], str]:
    thinking = chunks(reply.thinking) if reply.thinking else []
    text = chunks(reply.text)
    stop = reply.stop_reason or "stop"
    if limit is not None and len(thinking) + len(text) > limit:
        room = max(limit - len(thinking), 0)
        thinking, text, stop = thinking[:limit], text[:room], "length"
    return thinking, text, stop


def routes(state: AIState) -> list[web.RouteDef]:
    async def chat(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        _authorize(state, request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Rejected(400, "'messages' must contain at least one message")
        texts, last_user = [], ""
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise Rejected(400, f"Invalid value for 'messages[{i}].role'")
            text = _text(message.get("content"), f"messages[{i}].content")
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        stream_options = body.get("stream_options")
        if stream_options is not None and not body.get("stream"):
            raise Rejected(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        reply = state.next_reply(last_user)
        thinking, text, finish = _plan(reply, limit if isinstance(limit, int) else None)
        prompt_tokens = sum(tokens(t) for t in texts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(thinking) + len(text),
            "total_tokens": prompt_tokens + len(thinking) + len(text),
            "prompt_tokens_details": {"cached_tokens": _cached_tokens(state, model, texts), "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": len(thinking), "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        completion_id, created = new_id("chatcmpl-sim"), int(time.time())
        inline = reply.reasoning_style == "inline" and thinking
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text), "refusal": None}
            if thinking and inline:
                message["content"] = f"<think>{''.join(thinking)}</think>\n\n{message['content']}"
            elif thinking:
                message["reasoning_content"] = "".join(thinking)
            return web.json_response({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_sim",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            })

        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        with state.lock:
            delay = state.token_delay_s
        record = state.open_stream("openai", model)
        stream = await EventStream.open(request, record, delay, {"x-request-id": new_id("req_")})

        async def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> None:
            data: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_sim",
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            data.update(extra)
            await stream.send(json.dumps(data))

        async def produce(out: EventStream) -> None:
            await chunk({"role": "assistant", "content": ""})
            if reply.stall_s > 0:
                await out.stall(reply.stall_s, None)
            if inline:
                await chunk({"content": "<think>"})
            for piece in thinking:
                await out.delta_pause()
                await chunk({"content": piece} if inline else {"reasoning_content": piece})
            if inline:
                await chunk({"content": "</think>\n\n"})
            for n, piece in enumerate(text):
                if reply.error_after is not None and n == reply.error_after:
                    await out.send(json.dumps({"error": {"message": "The server had an error while processing your request.",
                                                         "type": "server_error", "param": None, "code": None}}))
                    return
                await out.delta_pause()
                await chunk({"content": piece})
                out.record.deltas_sent += 1
            await chunk({}, finish)
            if include_usage:
                await chunk(None, usage=usage)
            await out.send("[DONE]")

        return await stream.run(produce)

    async def embeddings(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        _authorize(state, request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "you must provide a model parameter")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
            raise Rejected(400, "'$.input' is invalid: expected a non-empty string or array of non-empty strings")
        if len(inputs) > 2048:
            raise Rejected(400, "'$.input' is too long: at most 2048 inputs per request")
        with state.lock:
            dim = state.embedding_dim
        dimensions = body.get("dimensions", dim)
        if not isinstance(dimensions, int) or dimensions < 1:
            raise Rejected(400, "'dimensions' must be a positive integer")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = vector(text, dimensions)
            data.append({"object": "embedding", "index": i, "embedding": float32_base64(vec) if as_base64 else vec})
        used = sum(tokens(t) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": used, "total_tokens": used}})

    return [
        web.post("/v1/chat/completions", handler(state, "openai", render_error, chat)),
        web.post("/v1/embeddings", handler(state, "openai", render_error, embeddings)),
    ]
