import asyncio
import contextlib
from dataclasses import replace
from http import HTTPStatus

import pytest

from api.exceptions import status_of
from inference import services
from inference.exceptions import ModelBusy, ModelNotConfigured
from inference.registry import get_registry
from inference.services import CallContext, StreamEnd, TextDelta
from limits.flows import Flow
from limits.slots import SlotTimeout
from tests.models import ANYONE, text_spec


def spec(**changes):
    return text_spec(**changes)


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


def test_image_model_without_server_names_the_variable(settings):
    settings.LLMAPI_MODELS = {
        **settings.LLMAPI_MODELS,
        "image": {**settings.LLMAPI_MODELS["image"], "base_url": ""},
    }
    with pytest.raises(ModelNotConfigured) as caught:
        services.resolve_model(None, role="image", capability="vision")
    assert "IMAGE_MODEL__BASE_URL" in str(caught.value.detail)


def test_text_model_without_server_or_local_model_names_the_variable(settings):
    settings.LOCAL_MODEL = {**settings.LOCAL_MODEL, "enabled": False}
    settings.LLMAPI_MODELS = {
        **settings.LLMAPI_MODELS,
        "text": {**settings.LLMAPI_MODELS["text"], "base_url": ""},
    }
    with pytest.raises(ModelNotConfigured) as caught:
        services.resolve_model(None, role="text")
    assert "TEXT_MODEL__BASE_URL" in str(caught.value.detail)


async def test_slot_is_refused_after_queue_timeout_with_retry_after():
    busy = spec(max_concurrency=1, queue_timeout=0.05)
    async with services.concurrency_slot(busy, ANYONE):
        with pytest.raises(ModelBusy) as caught:
            async with services.concurrency_slot(busy, ANYONE):
                pass
    assert status_of(caught.value) == HTTPStatus.TOO_MANY_REQUESTS
    assert caught.value.retry_after == 1
    assert services.slots_in_use(busy) == 0


async def test_waiting_requests_get_slots_first_come_first_served():
    model = spec(max_concurrency=1, queue_timeout=5)
    served: list[int] = []

    async def ask(number: int) -> None:
        async with services.concurrency_slot(model, ANYONE):
            served.append(number)
            await asyncio.sleep(0.01)

    tasks = []
    for number in range(6):
        tasks.append(asyncio.create_task(ask(number)))
        await asyncio.sleep(0)  # arrives after the previous one
    await asyncio.gather(*tasks)
    assert served == list(range(6))


async def test_the_callers_flow_orders_the_line():
    model = spec(max_concurrency=1, queue_timeout=5)
    served: list[str] = []
    release = asyncio.Event()

    def of(team: str) -> CallContext:
        return replace(ANYONE, flow=Flow(team=team, key=team))

    async def ask(name: str, team: str) -> None:
        async with services.concurrency_slot(model, of(team)):
            served.append(name)
            await release.wait()

    tasks = []
    for name, team in [("a0", "a"), ("a1", "a"), ("a2", "a"), ("a3", "a"), ("b0", "b")]:
        tasks.append(asyncio.create_task(ask(name, team)))
        await asyncio.sleep(0)  # arrives after the previous one
    release.set()
    await asyncio.gather(*tasks)
    # a0 took the free slot; a1 and b0 tie (neither team served from the line yet): the older
    # first, then team B before the rest of team A.
    assert served == ["a0", "a1", "b0", "a2", "a3"]


async def test_queue_timeout_passes_on_the_lines_retry_after(monkeypatch):
    model = spec(max_concurrency=1, queue_timeout=1)
    slots = get_registry().slots(model)

    @contextlib.asynccontextmanager
    async def refused(**_):
        raise SlotTimeout(retry_after=7)
        yield

    monkeypatch.setattr(slots, "hold", refused)
    with pytest.raises(ModelBusy) as caught:
        async with services.concurrency_slot(model, ANYONE):
            pass
    assert caught.value.retry_after == 7


async def test_slot_is_released_on_error_and_cancellation():
    model = spec(max_concurrency=1, queue_timeout=0)
    with pytest.raises(RuntimeError):
        async with services.concurrency_slot(model, ANYONE):
            raise RuntimeError

    async def hold():
        async with services.concurrency_slot(model, ANYONE):
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
    model = spec()
    events = (
        await services.open_chat_stream(context=ANYONE, spec=model, messages=[], params={})
    ).events
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
    model = spec()
    events = (
        await services.open_chat_stream(context=ANYONE, spec=model, messages=[], params={})
    ).events
    await anext(events)
    await events.aclose()
    assert backend.closed
    assert services.slots_in_use(model) == 0


def test_usage_of_reads_the_responses_apis_names_too():
    from inference.services import usage_of

    usage = {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9, "input_tokens_details": {}}
    assert usage_of(usage) == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert usage_of({"prompt_tokens": 1, "input_tokens": 5}) == {"prompt_tokens": 1}
