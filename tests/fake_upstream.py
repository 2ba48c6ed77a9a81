"""
An OpenAI-compatible model server for tests, served by uvicorn on loopback.

It answers `POST /v1/chat/completions` like vLLM or llama.cpp would: a JSON
`chat.completion`, or real Server-Sent Events when `stream` is true. Tests script its
behaviour with `FakeUpstream.behave(...)` (status, delays, chunk count, a mid-stream drop) and
read back every request it received and whether its clients disconnected.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn


@dataclass
class Behaviour:
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content: str = "The capital of France is Paris."
    chunks: list[str] | None = None  # streamed pieces; default: content split into words
    chunk_interval: float = 0.0
    delay: float = 0.0  # before the status line
    drop_after: int | None = None  # streamed chunks sent before the connection is cut
    raw_body: bytes | None = None  # sent as is (for protocol errors)
    contents: list[str] | None = None  # successive answers, one per request (then the last)
    fail_first: int | None = None  # only the first N requests get `status`, then normal answers
    reject_json_schema: bool = False
    # Answer with these tool calls ([{"name": ..., "arguments": "..."}]) like vLLM does:
    # content null, finish_reason "tool_calls"; streamed as tool_calls deltas.
    tool_calls: list[dict[str, str]] | None = None
    tool_calls_first: int | None = None  # only the first N requests get the tool calls
    argument_piece: int | None = None  # streamed arguments in pieces of this many characters
    # Which tokenizer endpoints it has, like "vllm" (/tokenize with messages), "llama.cpp"
    # (/apply-template, then /tokenize with content) or "none".
    tokenizer: str = "vllm"
    finish_reason: str = "stop"
    message_extra: dict[str, Any] = field(default_factory=dict)  # e.g. reasoning_content
    # Reasoning sent before the answer as `reasoning_content` (streamed word by word first).
    reasoning: str | None = None
    answer_extra: dict[str, Any] = field(default_factory=dict)  # e.g. system_fingerprint
    chaos: float = 0.0  # probability of a random fault per request (status, delay or drop)  # answer 400 to response_format json_schema, like some servers


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeUpstream:
    def __init__(self, port: int | None = None) -> None:
        self.behaviour = Behaviour()
        self.requests: list[ReceivedRequest] = []
        self.disconnects: list[float] = []
        self.open_streams = 0
        self.active = 0  # requests being answered right now
        # Requests received and not answered yet: each holds a gateway's concurrency slot, as
        # the gateway frees it only once it has the answer (`active` counts a request until
        # its last byte is sent, which the gateway may have read before then).
        self.unanswered = 0
        self.faults: dict[str, int] = {}
        self._random = random.Random(1)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- control --------------------------------------------------------------------------

    def behave(self, **kwargs: Any) -> None:
        self.behaviour = Behaviour(**kwargs)

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.requests.clear()
        self.disconnects.clear()

    @property
    def last_request(self) -> ReceivedRequest:
        return self.requests[-1]

    def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.active += 1
        try:
            await self._answer(scope, receive, send)
        finally:
            self.active -= 1

    def _chaos(self, behaviour: Behaviour) -> Behaviour:
        """Turn a normal answer into a random fault, as a soak test wants."""
        if not behaviour.chaos or self._random.random() >= behaviour.chaos:
            return behaviour
        fault = self._random.choice(["500", "503", "slow", "drop"])
        self.faults[fault] = self.faults.get(fault, 0) + 1
        if fault == "slow":
            return replace(behaviour, delay=0.3)
        if fault == "drop":
            return replace(behaviour, drop_after=2, chunk_interval=0.01)
        return replace(behaviour, status=int(fault))

    async def _answer(self, scope, receive, send) -> None:
        if scope["method"] == "GET" and scope["path"] in ("/metrics", "/slots"):
            # The gateway reads servers' load in the background; this server publishes none,
            # and the readings are not requests a test counts.
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        payload = json.loads(body) if body else {}
        self.requests.append(ReceivedRequest(scope["path"], headers, payload))
        behaviour = self._chaos(self.behaviour)
        if (
            behaviour.tool_calls_first is not None
            and len(self.requests) > behaviour.tool_calls_first
        ):
            behaviour = replace(behaviour, tool_calls=None)  # a tool loop's next turn
        answer = behaviour.content
        if behaviour.contents:
            index = len(self.requests) - 1
            answer = behaviour.contents[min(index, len(behaviour.contents) - 1)]

        if behaviour.delay:
            self.unanswered += 1
            try:
                await asyncio.sleep(behaviour.delay)
            finally:
                self.unanswered -= 1
        if scope["path"] in ("/tokenize", "/apply-template"):
            await self._tokenize(scope["path"], payload, behaviour, send)
            return
        if scope["path"] == "/v1/embeddings":
            await _send_json(send, 200, _embeddings(payload))
            return
        if scope["path"] == "/v1/completions":
            if payload.get("stream"):
                events = [
                    {"id": "cmpl-fake", "object": "text_completion", "choices": [c]}
                    for c in (
                        *({"index": 0, "text": w, "finish_reason": None} for w in _words(answer)),
                        {"index": 0, "text": "", "finish_reason": "stop"},
                    )
                ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")],
                    }
                )
                body = b"".join(_sse(event) for event in events) + b"data: [DONE]\n\n"
                await send({"type": "http.response.body", "body": body})
                return
            await _send_json(send, 200, _text_completion(payload, answer))
            return
        if scope["path"] == "/v1/responses":  # a server that speaks the Responses API
            await _responses_api(payload, answer, send)
            return
        if scope["path"] != "/v1/chat/completions":
            await _send_json(send, 404, {"error": {"message": f"no route {scope['path']}"}})
            return
        if (
            behaviour.reject_json_schema
            and (payload.get("response_format") or {}).get("type") == "json_schema"
        ):
            error = {"error": {"message": "response_format json_schema is not supported"}}
            await _send_json(send, 400, error)
            return
        failing = behaviour.fail_first is None or len(self.requests) <= behaviour.fail_first
        if behaviour.status >= 400 and failing:
            error = behaviour.error_body or {"error": {"message": f"injected {behaviour.status}"}}
            await _send_json(send, behaviour.status, error, behaviour.headers)
            return
        if behaviour.raw_body is not None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": behaviour.raw_body})
            return
        if payload.get("stream"):
            await self._stream(payload, answer, behaviour, receive, send)
        else:
            await _send_json(send, 200, _completion(payload, answer, behaviour), behaviour.headers)

    async def _tokenize(self, path: str, payload: dict, behaviour: Behaviour, send) -> None:
        """One token per word of the messages (and tools), as vLLM or llama.cpp's server says."""
        if behaviour.tokenizer == "vllm" and path == "/tokenize" and "messages" in payload:
            words = len(json.dumps([payload["messages"], payload.get("tools")]).split())
            await _send_json(send, 200, {"count": words, "max_model_len": 8192, "tokens": []})
        elif behaviour.tokenizer == "llama.cpp" and path == "/apply-template":
            prompt = " ".join(str(m.get("content")) for m in payload.get("messages", []))
            await _send_json(send, 200, {"prompt": "<s> " + prompt})
        elif behaviour.tokenizer == "llama.cpp" and "content" in payload:
            await _send_json(send, 200, {"tokens": list(range(len(payload["content"].split())))})
        else:
            await _send_json(send, 404, {"error": {"message": f"no route {path}"}})

    async def _stream(self, payload, answer, behaviour: Behaviour, receive, send) -> None:
        pieces = behaviour.chunks if behaviour.chunks is not None else _words(answer)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        disconnected = asyncio.Event()

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(time.monotonic())
                disconnected.set()

        watcher = asyncio.create_task(watch())
        self.open_streams += 1
        try:
            model = payload.get("model", "fake")
            if behaviour.tool_calls is not None:
                pieces = []
                calls = _tool_call_chunks(model, behaviour.tool_calls, behaviour.argument_piece)
                for chunk in calls:
                    await send(
                        {"type": "http.response.body", "body": _sse(chunk), "more_body": True}
                    )
            for thought in _words(behaviour.reasoning) if behaviour.reasoning else ():
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [
                        {"index": 0, "delta": {"reasoning_content": thought}, "finish_reason": None}
                    ],
                }
                await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
            for index, piece in enumerate(pieces):
                if behaviour.drop_after is not None and index >= behaviour.drop_after:
                    raise ConnectionAbortedError("injected mid-stream drop")
                if disconnected.is_set():
                    return
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": piece, **behaviour.message_extra},
                            "finish_reason": None,
                        }
                    ],
                    **behaviour.answer_extra,
                }
                await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
                if behaviour.chunk_interval:
                    try:
                        await asyncio.wait_for(disconnected.wait(), behaviour.chunk_interval)
                        return
                    except TimeoutError:
                        pass
            final = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "finish_reason": "tool_calls"
                        if behaviour.tool_calls is not None
                        else behaviour.finish_reason,
                    }
                ],
            }
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": _usage(payload, pieces),
            }
            body = _sse(final) + _sse(usage) + b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            self.open_streams -= 1
            watcher.cancel()


def _completion(payload: dict, answer: str, behaviour: Behaviour) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if behaviour.reasoning:
        message["reasoning_content"] = behaviour.reasoning
    finish_reason = behaviour.finish_reason
    if behaviour.tool_calls is not None:
        message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(behaviour)}
        finish_reason = "tool_calls"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": payload.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {**message, **behaviour.message_extra},
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(payload, _words(answer)),
        **behaviour.answer_extra,
    }


def _tool_calls(behaviour: Behaviour) -> list[dict]:
    return [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        for index, call in enumerate(behaviour.tool_calls or ())
    ]


def _tool_call_chunks(
    model: str, calls: list[dict[str, str]], piece: int | None = None
) -> list[dict]:
    """vLLM's way: the role, then per call its id and name, then its arguments in pieces."""

    def chunk(delta: dict) -> dict:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }

    chunks = [chunk({"role": "assistant", "content": None})]
    for index, call in enumerate(calls):
        head = {"index": index, "id": f"call_{index}", "type": "function"}
        chunks.append(chunk({"tool_calls": [{**head, "function": {"name": call["name"]}}]}))
        arguments = call["arguments"]
        middle = len(arguments) // 2
        pieces = (
            [arguments[:middle], arguments[middle:]]
            if piece is None
            else [arguments[at : at + piece] for at in range(0, len(arguments), piece)]
        )
        for fragment in pieces:
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            )
    return chunks


def _embeddings(payload: dict) -> dict:
    inputs = payload.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return {
        "object": "list",
        "model": payload.get("model", "fake"),
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.5, -0.25, float(len(str(x)))]}
            for i, x in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
    }


def _text_completion(payload: dict, answer: str) -> dict:
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "model": payload.get("model", "fake"),
        "choices": [{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _usage(payload: dict, pieces: list[str]) -> dict:
    prompt = sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
    }


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def _send_json(send, status: int, data: Any, headers: dict | None = None) -> None:
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


def wait_for_http(url: str, *, timeout: float = 120, process=None, log=None) -> None:
    """
    Wait until `url` answers HTTP at all; fail early if `process` (a Popen) has exited. A
    failure carries the end of `log` (the server's output: a path, or the file it was opened as).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(_with_log(f"server exited with {process.returncode}", log))
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    _with_log(f"{url} did not answer within {timeout} s", log)
                ) from None
            time.sleep(0.05)


def _with_log(reason: str, log) -> str:
    if log is None:
        return reason
    path = Path(getattr(log, "name", log))
    output = path.read_text(errors="replace")[-20_000:] if path.exists() else "(no log)"
    return f"{reason}; its log {path.name}:\n{output}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _responses_api(payload: dict, answer: str, send) -> None:
    """The Responses API's answer (OpenAI's own shapes): a response object, or its events."""
    words = _words(answer)
    response_id = f"resp_native{len(json.dumps(payload)):06d}"
    item = {"id": "msg_native", "type": "message", "role": "assistant", "status": "completed"}
    part = {"type": "output_text", "text": answer, "annotations": []}
    usage = {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": len(words),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7 + len(words),
    }
    response = {
        "id": response_id,
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": payload.get("model"),
        "output": [{**item, "content": [part]}],
        "previous_response_id": payload.get("previous_response_id"),
        "usage": usage,
    }
    if not payload.get("stream"):
        await _send_json(send, 200, response)
        return
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {
            "type": "response.content_part.added",
            "item_id": "msg_native",
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": ""},
        },
        *(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_native",
                "output_index": 0,
                "content_index": 0,
                "delta": word,
            }
            for word in words
        ),
        {"type": "response.output_item.done", "output_index": 0, "item": response["output"][0]},
        {"type": "response.completed", "response": response},
    ]
    body = b"".join(
        f"event: {event['type']}\n".encode() + _sse({**event, "sequence_number": number})
        for number, event in enumerate(events)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    await send({"type": "http.response.body", "body": body})
