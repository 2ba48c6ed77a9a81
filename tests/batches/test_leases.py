"""Claims, leases and ends of batch lines in the database (SQLite here; PostgreSQL in its run)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from batches import leases, services, storage
from batches.models import Batch, BatchLine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def files_dir(settings, tmp_path):
    settings.BATCHES = {**settings.BATCHES, "files_dir": tmp_path / "files"}


class Upload(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)


def chat_line(custom_id: str, **body) -> bytes:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
        }
    ).encode()


def make_batch(count: int, owner: str = "env:0") -> Batch:
    data = b"\n".join(chat_line(f"c{i}") for i in range(count)) + b"\n"
    uploaded = services.create_file(owner=owner, upload=Upload(data), filename="a", purpose="batch")
    return services.create_batch(
        owner=owner,
        owner_name="ci",
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )


def result(line: leases.ClaimedLine) -> dict:
    return {"id": "r", "custom_id": line.custom_id, "response": {"status_code": 200}, "error": None}


def test_two_workers_never_claim_the_same_line():
    make_batch(5)
    first = leases.claim_lines(worker="a", count=3, lease_seconds=60)
    second = leases.claim_lines(worker="b", count=10, lease_seconds=60)
    assert len(first) == 3 and len(second) == 2
    assert not {line.id for line in first} & {line.id for line in second}
    assert leases.claim_lines(worker="c", count=10, lease_seconds=60) == []
    assert all(line.attempts == 1 for line in first + second)


def test_a_line_whose_lease_passed_is_claimed_again_and_finished_once():
    make_batch(1)
    (held,) = leases.claim_lines(worker="dead", count=1, lease_seconds=60)
    assert leases.claim_lines(worker="b", count=1, lease_seconds=60) == []
    BatchLine.objects.filter(id=held.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    (again,) = leases.claim_lines(worker="b", count=1, lease_seconds=60)
    assert again.id == held.id and again.attempts == 2
    assert (
        leases.finish_line(worker="dead", line_id=held.id, done=True, result=result(held)) is False
    )
    assert leases.finish_line(worker="b", line_id=again.id, done=True, result=result(again)) is True
    assert (
        leases.finish_line(worker="b", line_id=again.id, done=True, result=result(again)) is False
    )
    assert BatchLine.objects.get(id=held.id).state == BatchLine.State.DONE


def test_results_are_written_together_each_only_by_its_lines_holder():
    batch = make_batch(4, owner="key:7")
    claimed = leases.claim_lines(worker="a", count=4, lease_seconds=60)
    assert [line.custom_id for line in claimed] == ["c0", "c1", "c2", "c3"]
    assert {line.owner for line in claimed} == {"key:7"}
    assert claimed[0].body["messages"] == [{"role": "user", "content": "hi"}]
    lost = claimed[2]  # its lease passed and another worker took it
    BatchLine.objects.filter(id=lost.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    (taken,) = leases.claim_lines(worker="b", count=1, lease_seconds=60)
    assert taken.id == lost.id

    written = leases.finish_lines(
        worker="a", results=[(line.id, line.custom_id != "c1", result(line)) for line in claimed]
    )

    assert written == [True, True, False, True]
    states = dict(BatchLine.objects.filter(batch=batch).values_list("custom_id", "state"))
    assert states == {"c0": "done", "c1": "failed", "c2": "running", "c3": "done"}
    assert BatchLine.objects.get(id=claimed[1].id).result == result(claimed[1])
    assert leases.finish_lines(worker="a", results=[]) == []


def test_a_claim_skips_paused_batches_and_lines_waiting_for_their_retry():
    paused, retried = make_batch(2), make_batch(2)
    (first,) = leases.claim_lines(worker="a", count=1, lease_seconds=60)
    assert first.batch_id == paused.id
    leases.release_line(worker="a", line_id=first.id, retry_in=60)
    claimed = leases.claim_lines(
        worker="a", count=10, lease_seconds=60, skip_batches=frozenset({paused.id})
    )
    assert {line.batch_id for line in claimed} == {retried.id}
    claimed = leases.claim_lines(worker="a", count=10, lease_seconds=60)
    assert [line.custom_id for line in claimed] == ["c1"]  # c0 waits for its retry


def test_renewed_leases_keep_a_line_from_other_workers():
    make_batch(1)
    (held,) = leases.claim_lines(worker="a", count=1, lease_seconds=60)
    BatchLine.objects.filter(id=held.id).update(lease_until=timezone.now() + timedelta(seconds=1))
    assert leases.renew_leases(worker="a", ids=[held.id], lease_seconds=60) == 1
    assert BatchLine.objects.get(id=held.id).lease_until > timezone.now() + timedelta(seconds=30)
    assert leases.renew_leases(worker="b", ids=[held.id], lease_seconds=60) == 0


def test_a_finished_batch_is_finalized_once_with_its_files():
    batch = make_batch(3)
    for line in leases.claim_lines(worker="a", count=3, lease_seconds=60):
        done = line.custom_id != "c1"
        leases.finish_line(worker="a", line_id=line.id, done=done, result=result(line))
    assert leases.sweep(lease_seconds=60) == ["completed"]
    assert leases.sweep(lease_seconds=60) == []
    batch.refresh_from_db()
    assert batch.status == "completed" and batch.completed_at is not None
    output = storage.path_of(batch.output_file_id).read_text().splitlines()
    errors = storage.path_of(batch.error_file_id).read_text().splitlines()
    assert [json.loads(line)["custom_id"] for line in output] == ["c0", "c2"]
    assert [json.loads(line)["custom_id"] for line in errors] == ["c1"]


def test_a_batch_does_not_finalize_while_a_line_runs():
    batch = make_batch(2)
    first, second = leases.claim_lines(worker="a", count=2, lease_seconds=60)
    leases.finish_line(worker="a", line_id=first.id, done=True, result=result(first))
    assert leases.sweep(lease_seconds=60) == []
    leases.finish_line(worker="a", line_id=second.id, done=True, result=result(second))
    assert leases.sweep(lease_seconds=60) == ["completed"]
    assert Batch.objects.get(pk=batch.pk).status == "completed"


def test_cancelling_gives_up_pending_lines_and_waits_for_running_ones():
    batch = make_batch(3)
    (running,) = leases.claim_lines(worker="a", count=1, lease_seconds=60)
    services.cancel_batch(owner="env:0", batch_id=batch.id)
    assert leases.claim_lines(worker="b", count=3, lease_seconds=60) == []
    assert leases.sweep(lease_seconds=60) == []  # the running line is not finished yet
    assert Batch.objects.get(pk=batch.pk).status == "cancelling"
    leases.finish_line(worker="a", line_id=running.id, done=True, result=result(running))
    assert leases.sweep(lease_seconds=60) == ["cancelled"]
    batch.refresh_from_db()
    errors = [json.loads(x) for x in storage.path_of(batch.error_file_id).read_text().splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(errors) == 2 and len({e["id"] for e in errors}) == 2


def test_a_batch_past_its_window_expires():
    batch = make_batch(2)
    Batch.objects.filter(pk=batch.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases.claim_lines(worker="a", count=2, lease_seconds=60) == []
    assert leases.sweep(lease_seconds=60) == ["expired"]
    batch.refresh_from_db()
    assert batch.status == "expired" and batch.expired_at is not None
    errors = storage.path_of(batch.error_file_id).read_text()
    assert errors.count("batch_expired") == 2


def test_a_stopped_batch_takes_up_no_dead_workers_line_and_still_ends():
    batch = make_batch(2)
    (dead,) = leases.claim_lines(worker="dead", count=1, lease_seconds=60)
    BatchLine.objects.filter(id=dead.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert leases.stop_batch(batch_id=batch.id, ending="failed", code="x", message="why") is True
    assert leases.sweep(lease_seconds=60) == ["failed"]
    batch.refresh_from_db()
    assert batch.errors["data"][0]["message"] == "why"


def test_a_finalizer_that_died_is_replaced_after_the_lease():
    batch = make_batch(1)
    Batch.objects.filter(pk=batch.pk).update(
        status="finalizing", finalizing_at=timezone.now() - timedelta(seconds=5)
    )
    BatchLine.objects.filter(batch=batch).update(state="done", result={"custom_id": "c0"})
    assert leases.sweep(lease_seconds=60) == []
    assert leases.sweep(lease_seconds=2) == ["completed"]
