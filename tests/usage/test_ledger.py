import asyncio
import logging
import threading

import pytest
from django.db import connection

from accounts.authentication import resolve_key
from usage.ledger import LedgerWriter
from usage.models import UsageRecord


def writer(**overrides) -> LedgerWriter:
    options = {
        "max_queue": 100_000,
        "batch_size": 500,
        "flush_interval": 0.05,
        "rollup_interval": 3600,
    }
    return LedgerWriter(**{**options, **overrides})


@pytest.mark.django_db(transaction=True)
def test_a_burst_from_many_threads_is_written_completely(make_key):
    created = make_key()
    principal = resolve_key(created.full_key)
    ledger = writer()
    ledger.start()

    def burst(worker: int) -> None:
        for index in range(1000):
            assert ledger.record(
                principal=principal,
                model="small",
                replica="http://replica-a",
                endpoint="/v1/chat/completions",
                status=200,
                prompt_tokens=7,
                completion_tokens=3,
                latency_ms=12.5,
                ttft_ms=4.0,
                request_id=f"{worker}-{index}",
            )

    threads = [threading.Thread(target=burst, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asyncio.run(ledger.flush_and_stop())
    assert ledger.dropped == 0 and ledger.written == 8000
    assert UsageRecord.objects.count() == 8000
    assert UsageRecord.objects.values("request_id").distinct().count() == 8000
    row = UsageRecord.objects.first()
    assert (row.key_id, row.key_prefix, row.team_name) == (
        created.api_key.pk,
        created.api_key.prefix,
        "research",
    )
    assert (row.model, row.replica, row.status, row.prompt_tokens, row.ttft_ms) == (
        "small",
        "http://replica-a",
        200,
        7,
        4.0,
    )


@pytest.mark.django_db(transaction=True)
def test_a_full_queue_counts_and_logs_the_overflow_without_blocking(caplog):
    ledger = writer(max_queue=10)  # not started: nothing drains the queue
    with caplog.at_level(logging.WARNING, logger="usage.ledger"):
        results = [ledger.record(status=200, request_id=str(index)) for index in range(25)]
    assert results.count(True) == 10 and ledger.dropped == 15
    assert len([r for r in caplog.records if "queue full" in r.message]) == 1  # rate-limited
    ledger.start()
    asyncio.run(ledger.flush_and_stop())
    assert UsageRecord.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_rows_queued_at_shutdown_are_written():
    ledger = writer(flush_interval=3600)  # only the shutdown flush writes
    ledger.start()
    for index in range(1234):
        ledger.record(status=500 if index % 10 == 0 else 200, endpoint="/text_model/chat/stream")
    asyncio.run(ledger.flush_and_stop())
    assert UsageRecord.objects.count() == 1234
    assert UsageRecord.objects.filter(status=500).count() == 124


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_keeps_the_rows_in_order_for_the_retry():
    ledger = writer()
    for index in range(5):
        ledger.record(status=200, request_id=str(index))
    with connection.cursor() as cursor:  # the table is gone for a moment: inserts fail
        cursor.execute("ALTER TABLE usage_usagerecord RENAME TO usage_away")
    try:
        assert ledger.write_pending() is False
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE usage_away RENAME TO usage_usagerecord")
    assert len(ledger.queue) == 5 and ledger.written == 0
    assert ledger.write_pending() is True
    assert list(UsageRecord.objects.order_by("id").values_list("request_id", flat=True)) == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]
