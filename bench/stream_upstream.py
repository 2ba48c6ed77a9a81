"""
A fast OpenAI-compatible model server for the streaming phases: every request to
/v1/chat/completions streams CHUNKS Server-Sent Events, INTERVAL milliseconds apart
(or answers with one JSON completion when `stream` is false).

    python bench/stream_upstream.py --port 18090 --chunks 16 --interval 10
"""

import argparse
import asyncio
import json

from aiohttp import web

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The capital of France is Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
}


def chunk(content: str | None, finish_reason: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    data = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def make_app(chunks: int, interval: float) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(COMPLETION)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(chunks):
            await response.write(chunk(f"word{index} "))
            if interval:
                await asyncio.sleep(interval)
        usage = {"prompt_tokens": 14, "completion_tokens": chunks, "total_tokens": 14 + chunks}
        final = json.loads(chunk(None, "stop")[6:])
        final["usage"] = usage
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval", type=float, default=10.0, help="milliseconds")
    args = parser.parse_args()
    web.run_app(
        make_app(args.chunks, args.interval / 1000),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
