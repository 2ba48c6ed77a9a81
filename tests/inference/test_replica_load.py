"""Reading a replica's load from its server: vLLM and llama.cpp pages, and what is not one."""

from __future__ import annotations

import httpx
import pytest

from inference import replica_load
from inference.backends.openai_http import OpenAICompatibleBackend
from inference.replica_load import parse_metrics, parse_slots, read_load
from tests.models import text_spec

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
vllm:num_requests_running_extra 99
vllm:prompt_tokens_total{model_name="m"} 1234.0
"""

LLAMA_CPP = """\
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 4
"""


def test_vllm_page_gives_running_waiting_and_cache_use():
    load = parse_metrics(VLLM)
    assert load is not None
    assert (load.running, load.waiting, load.kv_cache_usage) == (3, 2, 0.42)
    assert load.requests == 5 and load.source == "vllm"


def test_llama_cpp_page_gives_processing_and_deferred():
    load = parse_metrics(LLAMA_CPP)
    assert load is not None
    assert (load.requests, load.kv_cache_usage, load.source) == (5, None, "llama.cpp metrics")


def test_several_models_on_one_server_add_up():
    page = (
        'vllm:num_requests_running{model_name="a"} 1\nvllm:num_requests_running{model_name="b"} 2\n'
    )
    load = parse_metrics(page)
    assert load is not None and load.running == 3


@pytest.mark.parametrize(
    "page",
    [
        "",
        "# nothing\n",
        "process_cpu_seconds_total 3\n",
        'vllm:num_requests_running{x="1"} NaN\n',
        "vllm:num_requests_running\n",
    ],
)
def test_pages_without_a_load_give_none(page):
    assert parse_metrics(page) is None


def test_slots_count_those_processing():
    slots = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]
    assert parse_slots(slots).running == 1  # type: ignore[union-attr]
    assert parse_slots([{"id": 0, "state": 1}, {"id": 1, "state": 0}]).running == 1  # type: ignore[union-attr]
    assert parse_slots({"error": "slots disabled"}) is None
    assert parse_slots([{"id": 0}]) is None


def backend_serving(routes: dict[str, httpx.Response], seen: list[str]) -> OpenAICompatibleBackend:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return routes.get(request.url.path, httpx.Response(404))

    spec = text_spec(servers=("http://gpu-1:8000/v1", "http://gpu-2:8000/v1"))
    return OpenAICompatibleBackend(spec, transport=httpx.MockTransport(handler))


async def test_metrics_are_read_beside_v1_not_under_it():
    seen: list[str] = []
    backend = backend_serving({"/metrics": httpx.Response(200, text=VLLM)}, seen)
    load = await read_load(backend, backend.pool.replicas[0])
    assert load is not None and load.requests == 5
    assert seen == ["/metrics"]


async def test_llama_cpp_without_metrics_is_read_from_its_slots():
    seen: list[str] = []
    slots = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": True}]
    backend = backend_serving({"/slots": httpx.Response(200, json=slots)}, seen)
    load = await read_load(backend, backend.pool.replicas[0])
    assert load is not None and load.running == 2 and load.source == "llama.cpp slots"
    assert seen == ["/metrics", "/slots"]


async def test_a_server_publishing_no_load_is_left_alone_for_a_while():
    seen: list[str] = []
    backend = backend_serving({}, seen)
    replica = backend.pool.replicas[0]
    assert await read_load(backend, replica) is None
    assert await read_load(backend, replica) is None
    assert seen == ["/metrics", "/slots"]  # asked once


async def test_an_oversized_page_is_not_read_whole(monkeypatch):
    monkeypatch.setattr(replica_load, "MAX_BODY_BYTES", 100)
    seen: list[str] = []
    backend = backend_serving({"/metrics": httpx.Response(200, text=VLLM * 10)}, seen)
    assert await read_load(backend, backend.pool.replicas[0]) is None


async def test_an_unreachable_server_gives_no_reading_and_no_error():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    spec = text_spec(servers=("http://gpu-1:8000", "http://gpu-2:8000"))
    backend = OpenAICompatibleBackend(spec, transport=httpx.MockTransport(handler))
    assert await read_load(backend, backend.pool.replicas[0]) is None
