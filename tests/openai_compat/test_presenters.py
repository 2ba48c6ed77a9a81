import orjson

from inference.services import RawChunk, StreamEnd
from openai_compat.presenters import openai_passthrough_frames

CHUNKS = [
    {"id": "up-1", "model": "m", "system_fingerprint": "fp", "choices": [{"delta": {}}]},
    {"model": "m", "choices": [{"delta": {"reasoning_content": "r"}, "logprobs": {"x": 1}}]},
    {"model": "m", "choices": [], "usage": {"total_tokens": 3}},
]


async def frames(include_usage: bool) -> list:
    async def events():
        for chunk in CHUNKS:
            yield RawChunk(chunk)
        yield StreamEnd(model="m", finish_reason="stop")

    sent = [
        frame
        async for frame in openai_passthrough_frames(
            events(), model="asked", completion_id="gw-1", created=7, include_usage=include_usage
        )
    ]
    assert sent[-1] == b"data: [DONE]\n\n"
    return [orjson.loads(frame.removeprefix(b"data: ")) for frame in sent[:-1]]


async def test_chunks_pass_through_with_only_missing_fields_filled():
    first, second = await frames(include_usage=False)
    assert first["id"] == "up-1" and first["system_fingerprint"] == "fp"
    assert second["id"] == "gw-1" and second["created"] == 7
    assert second["choices"][0]["delta"]["reasoning_content"] == "r"
    assert second["choices"][0]["logprobs"] == {"x": 1}


async def test_the_usage_chunk_reaches_only_clients_that_asked():
    assert (await frames(include_usage=True))[-1]["usage"] == {"total_tokens": 3}
