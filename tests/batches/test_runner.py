"""
The runner in this process, its lines answered by a stand-in model call: lines run as the
batch's key, on the ledger, against its token budgets but not its request rate; a batch over
budget stops `failed` and says why.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from batches import runner, services, storage
from batches.models import Batch
from batches.owners import load_owner_principal
from inference import services as inference
from infra.database import in_database_thread
from limits import quotas, stores
from limits.flows import Flow
from limits.slots import LocalSlots
from tests.batches.test_leases import Upload, chat_line
from tests.models import text_spec
from tests.waiting import eventually
from usage import ledger

pytestmark = pytest.mark.django_db(transaction=True)
DEADLINE = 30.0


async def in_thread(func, *args, **kwargs):
    """Database work in a thread whose connections are closed after (as the gateway does)."""
    return await in_database_thread(func)(*args, **kwargs)


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path, monkeypatch, runtime):
    settings.BATCHES = {**settings.BATCHES, "files_dir": tmp_path / "files"}
    settings.API_KEYS = ["operator-key"]
    runtime.replace(stores.QuotaStoreState, stores.QuotaStoreState(quotas.InProcessQuotaStore()))
    writer = ledger.LedgerWriter(
        max_queue=1000, batch_size=1000, flush_interval=60, rollup_interval=600
    )
    runtime.replace(ledger.LedgerState, ledger.LedgerState(writer))
    spec = text_spec()
    monkeypatch.setattr(inference, "resolve_model", lambda name, **kwargs: spec)
    calls: list[dict] = []

    async def answer(*, spec, body, context=None):
        calls.append(body)
        usage = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
        raw = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
        return inference.ChatResult(
            "ok", spec.name, "stop", usage, answered_by=spec.name, replica="r1", raw=raw
        )

    monkeypatch.setattr(inference, "openai_chat_completion", answer)
    return writer, calls


def batch_for(owner: str, count: int) -> Batch:
    return batch_of(owner, [chat_line(f"c{i}", max_tokens=5) for i in range(count)])


def batch_of(owner: str, lines: list[bytes]) -> Batch:
    data = b"\n".join(lines)
    uploaded = services.create_file(owner=owner, upload=Upload(data), filename="a", purpose="batch")
    return services.create_batch(
        owner=owner,
        owner_name="ci",
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )


async def run_until_ended(batch_id: str) -> Batch:
    work = runner.BatchRunner(concurrency=1, lease_seconds=30, poll_seconds=0.05, max_attempts=2)
    work.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            # Read on the runner's own database thread: the test database is SQLite's shared
            # cache in memory, where a read from another thread makes the runner's write fail at
            # once ("table is locked") instead of waiting, which leaves the batch finalizing.
            batch = await work._db.run(Batch.objects.get, pk=batch_id)
            if batch.status in ("completed", "failed", "cancelled", "expired"):
                return batch
            await asyncio.sleep(0.05)
        raise AssertionError("the batch did not end")
    finally:
        await work.stop()


def entries(file_id: str) -> list[dict]:
    if not file_id:
        return []
    return [json.loads(line) for line in storage.path_of(file_id).read_text().splitlines()]


async def test_lines_run_as_the_batchs_key_without_its_request_rate(isolated, make_key):
    writer, calls = isolated
    key = await in_thread(make_key, requests_per_minute=1, concurrent_requests=1)
    owner = f"key:{key.api_key.pk}"
    batch = await in_thread(batch_for, owner, 4)

    ended = await run_until_ended(batch.id)

    assert ended.status == "completed"
    assert len(calls) == 4
    assert [e["custom_id"] for e in entries(ended.output_file_id)] == ["c0", "c1", "c2", "c3"]
    rows = [dict(zip(ledger.FIELDS, row, strict=True)) for row in writer.queue]
    assert len(rows) == 4
    assert {(r["key_id"], r["endpoint"], r["status"]) for r in rows} == {
        (key.api_key.pk, "v1/batches", 200)
    }
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) == 60


async def test_a_batch_over_its_keys_token_budget_fails_and_says_why(isolated, make_key):
    writer, calls = isolated
    key = await in_thread(make_key, tokens_per_day=35)
    batch = await in_thread(batch_for, f"key:{key.api_key.pk}", 5)

    ended = await run_until_ended(batch.id)

    assert ended.status == "failed" and ended.failed_at is not None
    (error,) = ended.errors["data"]
    assert error["code"] == "token_budget_exceeded"
    assert (error["scope"], error["limit"]) == ("key", "tokens_per_day")
    assert error["message"].startswith(
        "The batch stopped: the API key's budget of 35 tokens per day is spent (it renews in "
    )
    # Each line reserves 10 tokens (max_tokens and the prompt) and uses 15: the third would
    # overrun what is left of the 35.
    assert len(calls) == 2
    assert [e["custom_id"] for e in entries(ended.output_file_id)] == ["c0", "c1"]
    failed = entries(ended.error_file_id)
    assert sorted(e["custom_id"] for e in failed) == ["c2", "c3", "c4"]
    assert {e["error"]["code"] for e in failed} == {"batch_failed"}


async def test_a_batch_over_its_teams_monthly_budget_names_the_team(isolated, make_key, team):
    _, calls = isolated
    team.tokens_per_month = 20
    await in_thread(team.save)
    key = await in_thread(make_key, tokens_per_day=1000)
    batch = await in_thread(batch_for, f"key:{key.api_key.pk}", 3)

    ended = await run_until_ended(batch.id)

    assert ended.status == "failed"
    (error,) = ended.errors["data"]
    assert error["code"] == "token_budget_exceeded"
    assert (error["scope"], error["limit"]) == ("team", "tokens_per_month")
    assert "the team's budget of 20 tokens per month is spent" in error["message"]
    # 10 tokens reserved, 15 used: a second line no longer fits in the 20.
    assert len(calls) == 1
    assert {e["error"]["code"] for e in entries(ended.error_file_id)} == {"batch_failed"}


async def test_a_line_larger_than_a_budget_fails_alone_and_the_rest_run(isolated, make_key):
    _, calls = isolated
    key = await in_thread(make_key, tokens_per_day=1000)
    owner = f"key:{key.api_key.pk}"
    lines = [chat_line("small", max_tokens=5), chat_line("huge", max_tokens=2000)]
    lines.append(chat_line("after", max_tokens=5))
    batch = await in_thread(batch_of, owner, lines)

    ended = await run_until_ended(batch.id)

    assert ended.status == "completed"
    assert [e["custom_id"] for e in entries(ended.output_file_id)] == ["small", "after"]
    (refused,) = entries(ended.error_file_id)
    assert refused["custom_id"] == "huge"
    assert refused["response"]["status_code"] == 429
    message = refused["response"]["body"]["error"]["message"]
    assert "more than the API key's limit of 1000 tokens per day" in message
    assert len(calls) == 2


async def test_a_batch_of_a_revoked_key_fails(isolated, make_key):
    _, calls = isolated
    key = await in_thread(make_key)
    batch = await in_thread(batch_for, f"key:{key.api_key.pk}", 2)
    key.api_key.revoked = True
    await in_thread(key.api_key.save)

    ended = await run_until_ended(batch.id)

    assert ended.status == "failed"
    assert ended.errors["data"][0]["code"] == "key_inactive"
    assert calls == []


async def test_a_model_server_failure_is_tried_again_then_kept(isolated, monkeypatch):
    from inference.exceptions import UpstreamError

    async def failing(*, spec, body, context=None):
        raise UpstreamError("The text model server failed (503).")

    monkeypatch.setattr(inference, "openai_chat_completion", failing)
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    batch = await in_thread(batch_for, "env:0", 1)

    ended = await run_until_ended(batch.id)

    assert ended.status == "completed"
    (entry,) = entries(ended.error_file_id)
    assert entry["response"]["status_code"] == 502
    assert "503" in entry["response"]["body"]["error"]["message"]
    line = await in_thread(ended.lines.get)
    assert line.attempts == 2


async def test_a_line_whose_slot_interactive_work_takes_runs_again_and_ends_once(
    isolated, monkeypatch, make_key
):
    writer, calls = isolated
    key = await in_thread(make_key, tokens_per_day=1000)
    owner = f"key:{key.api_key.pk}"
    slots = LocalSlots(1, preempt=True)
    finish = asyncio.Event()

    async def answer(*, spec, body, context=None):
        async with slots.hold(queue_timeout=30, flow=context.flow):  # the batch priority
            calls.append(body)
            await finish.wait()
        usage = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
        raw = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
        return inference.ChatResult(
            "ok", spec.name, "stop", usage, answered_by=spec.name, replica="r1", raw=raw
        )

    monkeypatch.setattr(inference, "openai_chat_completion", answer)
    batch = await in_thread(batch_for, owner, 1)
    running = asyncio.create_task(run_until_ended(batch.id))
    await eventually(lambda: len(calls) == 1)

    # An interactive request finds the only slot held by the line: the line gives it up.
    async with slots.hold(queue_timeout=DEADLINE, flow=Flow(team="people", key="i")):
        assert slots.in_use == 1
    await eventually(lambda: len(calls) == 2)  # the line runs again, at the batch priority
    finish.set()
    ended = await running

    assert ended.status == "completed"
    assert [e["custom_id"] for e in entries(ended.output_file_id)] == ["c0"]
    assert entries(ended.error_file_id) == []
    rows = [dict(zip(ledger.FIELDS, row, strict=True)) for row in writer.queue]
    assert [row["status"] for row in rows] == [499, 200]  # the cut call is on the ledger too
    assert rows[0]["prompt_tokens"] + rows[0]["completion_tokens"] == 0
    # ... and charges nothing: the day's count is the answer's 15 tokens alone.
    principal = await in_thread(load_owner_principal, owner)
    snapshot = await stores.get_quota_store().snapshot(principal.quota)
    assert snapshot["key"]["tokens_per_day"]["used"] == 15
