import asyncio
from dataclasses import replace
from http import HTTPStatus

import pytest

from completions import services
from completions.exceptions import ModelBusy, ModelNotConfigured
from completions.registry import get_model_spec
from completions.services import StreamEnd, TextDelta


def spec(**changes):
    return replace(get_model_spec("text"), base_url="http://model:8000", **changes)


def test_payload_fills_defaults_and_keeps_caller_values():
    payload = services.build_payload(
        spec=spec(),
        messages=[{"role": "user", "content": "hi"}],
        params={"temperature": 0.9, "seed": 42},
        stream=False,
    )
    assert payload["temperature"] == 0.9
    assert payload["seed"] == 42
    assert payload["max_tokens"] == 2048
    assert payload["top_p"] == 1.0
    assert "stream" not in payload and "response_format" not in payload


def test_stream_payload_asks_for_usage():
    payload = services.build_payload(spec=spec(), messages=[], params={}, stream=True)
    assert payload["stream"] is True
    assert payload["stream_options"] == {"include_usage": True}


def test_image_model_without_server_names_the_variable():
    image = replace(get_model_spec("image"), base_url="")
    with pytest.raises(ModelNotConfigured) as caught:
        services.get_backend(image)
    assert "IMAGE_MODEL__BASE_URL" in str(caught.value.detail)


def test_text_model_without_server_or_local_model_names_the_variable(settings):
    settings.LOCAL_MODEL = {**settings.LOCAL_MODEL, "enabled": False}
    with pytest.raises(ModelNotConfigured) as caught:
        services.get_backend(replace(get_model_spec("text"), base_url=""))
    assert "TEXT_MODEL__BASE_URL" in str(caught.value.detail)


async def test_slot_is_refused_after_queue_timeout_with_retry_after():
    busy = spec(kind="busy-test", max_concurrency=1, queue_timeout=0.05)
    async with services.concurrency_slot(busy):
        with pytest.raises(ModelBusy) as caught:
            async with services.concurrency_slot(busy):
                pass
    assert caught.value.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert caught.value.retry_after == 1
    assert services.slots_in_use(busy) == 0


async def test_waiting_requests_get_slots_first_come_first_served():
    model = spec(kind="fifo-test", max_concurrency=1, queue_timeout=5)
    served: list[int] = []

    async def ask(number: int) -> None:
        async with services.concurrency_slot(model):
            served.append(number)
            await asyncio.sleep(0.01)

    tasks = []
    for number in range(6):
        tasks.append(asyncio.create_task(ask(number)))
        await asyncio.sleep(0)  # arrives after the previous one
    await asyncio.gather(*tasks)
    assert served == list(range(6))


async def test_slot_is_released_on_error_and_cancellation():
    model = spec(kind="release-test", max_concurrency=1, queue_timeout=0)
    with pytest.raises(RuntimeError):
        async with services.concurrency_slot(model):
            raise RuntimeError

    async def hold():
        async with services.concurrency_slot(model):
            await asyncio.sleep(10)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert services.slots_in_use(model) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert services.slots_in_use(model) == 0


class ScriptedBackend:
    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = False

    async def create(self, payload):
        raise NotImplementedError

    def stream(self, payload):
        backend = self

        class Ctx:
            async def __aenter__(self):
                async def gen():
                    for chunk in backend.chunks:
                        yield chunk

                return gen()

            async def __aexit__(self, *exc):
                backend.closed = True

        return Ctx()


async def test_stream_events_are_deltas_then_end(monkeypatch):
    backend = ScriptedBackend(
        [
            {"model": "m1", "choices": [{"delta": {"content": "A"}}]},
            {"choices": [{"delta": {"content": "B"}, "finish_reason": "stop"}]},
            {
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            },
        ]
    )
    monkeypatch.setattr(services, "get_backend", lambda spec: backend)
    model = spec(kind="stream-test")
    events = await services.open_chat_stream(spec=model, messages=[], params={})
    assert services.slots_in_use(model) == 1
    received = [event async for event in events]
    assert received == [
        TextDelta("A"),
        TextDelta("B"),
        StreamEnd(
            model="m1",
            finish_reason="stop",
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        ),
    ]
    assert backend.closed
    assert services.slots_in_use(model) == 0


async def test_closing_a_stream_early_frees_the_slot_and_upstream(monkeypatch):
    backend = ScriptedBackend([{"choices": [{"delta": {"content": str(i)}}]} for i in range(10)])
    monkeypatch.setattr(services, "get_backend", lambda spec: backend)
    model = spec(kind="close-test")
    events = await services.open_chat_stream(spec=model, messages=[], params={})
    await anext(events)
    await events.aclose()
    assert backend.closed
    assert services.slots_in_use(model) == 0
