"""
OpenAI's Batch API through the real `openai` SDK, against the real server and the fake model
server: upload, create, watch, read the output and error files, cancel; hostile files; one
key never sees another's.
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, OTHER_KEY

DEADLINE = 60.0


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory):
    return tmp_path_factory.mktemp("batch-files")


@pytest.fixture
def batch_gateway(gateways, upstream, batch_files):
    """One gateway for the module (the same settings each time), its files in one folder."""
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        BATCHES__POLL_SECONDS="0.1",
        BATCHES__MAX_LINE_BYTES=str(64 * 1024),
        BATCHES__MAX_FILE_BYTES=str(16 * 1024 * 1024),
        BATCHES__FILES_DIR=str(batch_files),
    )


@pytest.fixture
def sdk(batch_gateway):
    with openai.OpenAI(
        base_url=f"{batch_gateway.url}/v1", api_key=API_KEY, max_retries=0
    ) as client:
        yield client


@pytest.fixture
def other_sdk(batch_gateway):
    with openai.OpenAI(
        base_url=f"{batch_gateway.url}/v1", api_key=OTHER_KEY, max_retries=0
    ) as client:
        yield client


def chat_line(custom_id: str, content: str = "Hello", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "fake-llm", "messages": [{"role": "user", "content": content}], **body},
    }


def jsonl(lines: list) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def upload(client: openai.OpenAI, data: bytes, name: str = "requests.jsonl"):
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch")


def wait_until_ended(client: openai.OpenAI, batch_id: str):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_runs_from_upload_to_results(sdk, upstream):
    lines = [chat_line(f"request-{i}", f"Question {i}") for i in range(5)]
    uploaded = upload(sdk, jsonl(lines))
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert sdk.files.retrieve(uploaded.id).filename == "requests.jsonl"

    batch = sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "eval"},
    )
    assert batch.status in ("validating", "in_progress", "finalizing", "completed")
    assert batch.request_counts.total == 5
    assert batch.metadata == {"job": "eval"}

    ended = wait_until_ended(sdk, batch.id)
    assert ended.status == "completed"
    assert (ended.request_counts.completed, ended.request_counts.failed) == (5, 0)
    assert ended.error_file_id is None
    output = read_jsonl(sdk, ended.output_file_id)
    assert [entry["custom_id"] for entry in output] == [f"request-{i}" for i in range(5)]
    for entry in output:
        assert entry["error"] is None
        assert entry["response"]["status_code"] == HTTPStatus.OK
        assert entry["id"].startswith("batch_req_")
        body = entry["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == "The capital of France is Paris."
    asked = sorted(
        r.body["messages"][0]["content"]
        for r in upstream.requests
        if r.path.endswith("/chat/completions")
    )
    assert asked == [f"Question {i}" for i in range(5)]
    assert any(b.id == batch.id for b in sdk.batches.list())


def test_embeddings_lines_run_through_the_embeddings_endpoint(gateways, upstream, tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "models:\n"
        "  fake-embed:\n"
        f"    servers: [{upstream.url}/v1]\n"
        "    capabilities: [embeddings]\n"
    )
    gateway = gateways.get(
        LLMAPI_MODELS_FILE=str(catalog),
        TEXT_MODEL__BASE_URL="",
        BATCHES__POLL_SECONDS="0.1",
        BATCHES__FILES_DIR=str(tmp_path / "files"),
    )
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        line = {
            "custom_id": "e1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "fake-embed", "input": ["a", "bb"]},
        }
        uploaded = upload(client, jsonl([line]))
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        ended = wait_until_ended(client, batch.id)
        assert ended.status == "completed", ended
        (entry,) = read_jsonl(client, ended.output_file_id)
        assert [d["index"] for d in entry["response"]["body"]["data"]] == [0, 1]


def test_invalid_lines_are_error_file_entries_and_the_rest_runs(sdk):
    lines = [
        chat_line("good-1"),
        b"this is not json",
        {"custom_id": "wrong-url", "method": "POST", "url": "/v1/images", "body": {}},
        chat_line("good-1"),  # a custom_id used twice
        chat_line("no-messages") | {"body": {"model": "fake-llm"}},
        chat_line("streamed", stream=True),
        {"custom_id": "wide", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "fake-llm", "messages": [{"role": "user", "content": "x" * 70_000}]}},
        chat_line("good-2"),
        chat_line("unknown-model") | {"body": {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}},
    ]  # fmt: skip
    batch = sdk.batches.create(
        input_file_id=upload(sdk, jsonl(lines)).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    ended = wait_until_ended(sdk, batch.id)
    assert ended.status == "completed"
    assert ended.request_counts.total == 9
    assert (ended.request_counts.completed, ended.request_counts.failed) == (2, 7)
    output = read_jsonl(sdk, ended.output_file_id)
    assert [e["custom_id"] for e in output] == ["good-1", "good-2"]
    errors = {
        (e["custom_id"], (e["error"] or {}).get("code")): e
        for e in read_jsonl(sdk, ended.error_file_id)
    }
    assert sorted(errors, key=repr) == sorted(
        [
            (None, "invalid_json_line"),
            ("wrong-url", "invalid_url"),
            ("good-1", "duplicate_custom_id"),
            ("no-messages", "invalid_request"),
            ("streamed", "invalid_request"),
            (None, "line_too_long"),
            ("unknown-model", None),
        ],
        key=repr,
    )
    assert "messages" in errors[("no-messages", "invalid_request")]["error"]["message"]
    unknown = errors[("unknown-model", None)]["response"]
    assert unknown["status_code"] == HTTPStatus.NOT_FOUND
    assert unknown["body"]["error"]["code"] == "model_not_found"


def test_a_batch_without_one_valid_line_fails_and_says_why(sdk):
    batch = sdk.batches.create(
        input_file_id=upload(sdk, jsonl([{"custom_id": "a", "url": "/v1/nothing", "body": {}}])).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    ended = wait_until_ended(sdk, batch.id)
    assert ended.status == "failed"
    assert ended.errors.data[0].code == "invalid_url"
    assert ended.errors.data[0].line == 1
    assert ended.request_counts.failed == 1


def test_hostile_files_get_a_400_naming_the_field(sdk, batch_gateway):
    for data in (b"\x89PNG\r\n\x1a\n\x00\x00binary", b"[1, 2, 3]\n", b"", b"\n\n"):
        with pytest.raises(openai.BadRequestError) as refused:
            upload(sdk, data)
        assert refused.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.create(file=("a.jsonl", io.BytesIO(jsonl([chat_line("a")]))), purpose="fine-tune")
    assert refused.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(
            input_file_id="file-doesnotexist",
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert refused.value.body["param"] == "input_file_id"
    uploaded = upload(sdk, jsonl([chat_line("a")]))
    for field, value in (("endpoint", "/v1/images/generations"), ("completion_window", "1y")):
        arguments = {
            "input_file_id": uploaded.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            field: value,
        }
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.batches.create(**arguments)
        assert refused.value.body["param"] == field


def test_a_file_larger_than_the_limit_is_refused_with_413(batch_gateway):
    with batch_gateway.client() as client:
        big = b"x" * (16 * 1024 * 1024 + 2 * 1024 * 1024)
        answer = client.post(
            "/v1/files", files={"file": ("a.jsonl", big)}, data={"purpose": "batch"}
        )
    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "BATCHES__MAX_FILE_BYTES" in answer.json()["error"]["message"]


def test_ten_megabyte_lines_are_error_entries_not_crashes(sdk):
    huge = (
        b'{"custom_id": "huge", "url": "/v1/chat/completions", "body": {"x": "'
        + b"y" * (10 * 1024 * 1024)
        + b'"}}'
    )
    batch = sdk.batches.create(
        input_file_id=upload(sdk, jsonl([chat_line("first"), huge, chat_line("last")])).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    ended = wait_until_ended(sdk, batch.id)
    assert (ended.request_counts.completed, ended.request_counts.failed) == (2, 1)
    (error,) = read_jsonl(sdk, ended.error_file_id)
    assert error["error"]["code"] == "line_too_long"
    assert "BATCHES__MAX_LINE_BYTES" in error["error"]["message"]


def test_another_keys_files_and_batches_are_not_found(sdk, other_sdk):
    uploaded = upload(sdk, jsonl([chat_line("a")]))
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for call in (
        lambda: other_sdk.files.retrieve(uploaded.id),
        lambda: other_sdk.files.content(uploaded.id),
        lambda: other_sdk.files.delete(uploaded.id),
        lambda: other_sdk.batches.retrieve(batch.id),
        lambda: other_sdk.batches.cancel(batch.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError) as missing:
        other_sdk.batches.retrieve("batch_000000000000000000000000")
    with pytest.raises(openai.NotFoundError) as foreign:
        other_sdk.batches.retrieve(batch.id)
    assert (
        missing.value.body["message"].replace("batch_000000000000000000000000", batch.id)
        == (foreign.value.body["message"])
    )
    with pytest.raises(openai.BadRequestError) as refused:
        other_sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert refused.value.body["param"] == "input_file_id"
    assert all(f.id != uploaded.id for f in other_sdk.files.list())
    assert all(b.id != batch.id for b in other_sdk.batches.list())


def test_cancel_stops_the_batch_and_keeps_what_finished(sdk, upstream):
    upstream.behave(delay=0.3)
    lines = [chat_line(f"r{i}") for i in range(40)]
    batch = sdk.batches.create(
        input_file_id=upload(sdk, jsonl(lines)).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    deadline = time.monotonic() + DEADLINE
    while sdk.batches.retrieve(batch.id).request_counts.completed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    ended = wait_until_ended(sdk, batch.id)
    assert ended.status == "cancelled"
    counts = ended.request_counts
    assert counts.completed >= 1 and counts.failed >= 1
    assert counts.completed + counts.failed == 40
    output = read_jsonl(sdk, ended.output_file_id)
    errors = read_jsonl(sdk, ended.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert sorted(e["custom_id"] for e in output + errors) == sorted(f"r{i}" for i in range(40))


def test_a_deleted_file_is_gone(sdk):
    uploaded = upload(sdk, jsonl([chat_line("a")]))
    assert sdk.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(uploaded.id)


def test_content_missing_from_the_folder_is_a_503_that_says_so(sdk, batch_files):
    uploaded = upload(sdk, jsonl([chat_line("a")]))
    (batch_files / uploaded.id).unlink()
    with pytest.raises(openai.InternalServerError) as missing:
        sdk.files.content(uploaded.id)
    assert missing.value.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "BATCHES__FILES_DIR" in missing.value.body["message"]


def test_responses_lines_are_answered_as_the_responses_api_answers(sdk, upstream):
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": "fake-llm", "input": "What is the capital of France?", "store": False},
    }
    batch = sdk.batches.create(
        input_file_id=upload(sdk, jsonl([line])).id,
        endpoint="/v1/responses",
        completion_window="24h",
    )
    ended = wait_until_ended(sdk, batch.id)
    assert ended.status == "completed", ended
    (entry,) = read_jsonl(sdk, ended.output_file_id)
    body = entry["response"]["body"]
    assert body["object"] == "response"
    assert body["output"][0]["content"][0]["text"] == "The capital of France is Paris."
    asked = upstream.requests[-1].body
    assert asked["messages"][-1]["content"] == "What is the capital of France?"


METRICS_TOKEN = "batch-order-metrics"


def queue_length(url: str, priority: str) -> float:
    """Requests waiting for a model slot at `priority`, from the gateway's /metrics."""
    text = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    ).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "llmapi_queue_length"
        for sample in family.samples
        if sample.labels.get("priority") == priority
    )


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.02)


def test_a_freed_slot_goes_to_a_waiting_interactive_request_before_batch_lines(
    gateways, upstream, tmp_path
):
    # One slot, a slow model server, and more batch lines in flight than slots: while one line
    # is answered the others wait for the slot, in the scheduler's `batch` class.
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        TEXT_MODEL__MAX_CONCURRENCY="1",
        TEXT_MODEL__QUEUE_TIMEOUT="120",
        SERVER__WORKERS="1",  # the slots are counted per process
        BATCHES__CONCURRENCY="4",
        BATCHES__POLL_SECONDS="0.1",
        BATCHES__FILES_DIR=str(tmp_path / "files"),
        METRICS__TOKEN=METRICS_TOKEN,
    )
    upstream.behave(delay=0.4)

    def contents() -> list[str]:
        return [request.body["messages"][0]["content"] for request in list(upstream.requests)]

    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        lines = [chat_line(f"b{i}", "batch") for i in range(12)]
        uploaded = upload(client, jsonl(lines))
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        try:
            wait_for(
                lambda: "batch" in contents() and queue_length(gateway.url, "batch") >= 3,
                "one batch line at the model server and three waiting for its slot",
            )
            with ThreadPoolExecutor(max_workers=1) as pool:
                asked = pool.submit(
                    client.chat.completions.create,
                    model="fake-llm",
                    messages=[{"role": "user", "content": "interactive"}],
                )
                wait_for(
                    lambda: (
                        queue_length(gateway.url, "interactive") >= 1 or "interactive" in contents()
                    ),
                    "the interactive request waiting for the slot",
                )
                # Batch lines were waiting before it; whatever the server had seen by now,
                # the next request it gets is the interactive one.
                seen = len(contents())
                assert queue_length(gateway.url, "batch") >= 1
                answer = asked.result(timeout=DEADLINE)
            assert answer.choices[0].message.content
            order = contents()
            assert order.index("interactive") <= seen, order
        finally:
            client.batches.cancel(batch.id)
            ended = wait_until_ended(client, batch.id)
    assert ended.status == "cancelled"
