"""
Uploads and the check of every line before a batch starts (hostile lines are error entries),
the storage limits, and the expiry of files.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from django.utils import timezone

from batches import presenters, services, storage
from batches.exceptions import FileRefused, NotFound
from batches.models import BatchLine, StoredFile
from tests.batches.test_leases import Upload, chat_line

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def files_dir(settings, tmp_path):
    settings.BATCHES = {**settings.BATCHES, "files_dir": tmp_path / "files", "max_line_bytes": 4096}


def batch_of(*lines: bytes, owner: str = "env:0"):
    data = b"\n".join(lines) + b"\n"
    uploaded = services.create_file(owner=owner, upload=Upload(data), filename="a", purpose="batch")
    return services.create_batch(
        owner=owner,
        owner_name="ci",
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )


def error_codes(batch) -> dict[int, str]:
    return {
        line.index: line.result["error"]["code"]
        for line in BatchLine.objects.filter(batch=batch, state=BatchLine.State.FAILED)
    }


def test_hostile_lines_are_error_entries_the_database_never_sees():
    deep = b'{"custom_id": "deep", "body": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    nested = b'{"custom_id": "nested", "body": ' + b"[" * 100 + b"]" * 100 + b"}"
    nul_id = b'{"custom_id": "a\\u0000b", "url": "/v1/chat/completions", "body": {}}'
    nul_body = chat_line("nul-body").replace(b'"hi"', b'"h\\u0000i"')
    batch = batch_of(
        chat_line("ok"),
        deep,
        nested,
        nul_id,
        nul_body,
        b"\xff\xfe not utf-8",
        b"x" * 5000,
        b"[]",
    )
    assert batch.total == 8
    assert error_codes(batch) == {
        1: "invalid_json_line",
        2: "invalid_json_line",
        3: "invalid_json_line",
        4: "invalid_json_line",
        5: "invalid_json_line",
        6: "line_too_long",
        7: "invalid_json_line",
    }
    assert BatchLine.objects.get(batch=batch, index=0).state == BatchLine.State.PENDING


def test_a_file_id_that_is_not_one_is_not_looked_up():
    for odd in ("file-\x00", "../../etc/passwd", "file-" + "a" * 500):
        with pytest.raises(NotFound):
            services.get_file(owner="env:0", file_id=odd)
        with pytest.raises(FileRefused):
            services.create_batch(
                owner="env:0",
                owner_name="ci",
                input_file_id=odd,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata=None,
            )


def test_metadata_and_names_with_nul_are_refused_or_cleaned():
    uploaded = services.create_file(
        owner="env:0", upload=Upload(chat_line("a")), filename="a\x00b.jsonl", purpose="batch"
    )
    assert uploaded.filename == "ab.jsonl"
    with pytest.raises(FileRefused) as refused:
        services.create_batch(
            owner="env:0",
            owner_name="ci",
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"k": "v\x00"},
        )
    assert "metadata" in refused.value.detail


def test_a_file_with_more_lines_than_allowed_is_refused(settings):
    settings.BATCHES = {**settings.BATCHES, "max_lines": 2}
    with pytest.raises(FileRefused) as refused:
        batch_of(chat_line("a"), chat_line("b"), chat_line("c"))
    assert "input_file_id" in refused.value.detail
    assert not BatchLine.objects.exists()  # nothing of it was stored


def test_a_keys_storage_limit_is_kept(settings):
    settings.BATCHES = {**settings.BATCHES, "max_bytes_per_key": 200}
    services.create_file(
        owner="env:0", upload=Upload(chat_line("a")), filename="a", purpose="batch"
    )
    with pytest.raises(services.StorageFull):
        services.create_file(
            owner="env:0", upload=Upload(chat_line("b")), filename="b", purpose="batch"
        )
    services.create_file(
        owner="env:1", upload=Upload(chat_line("b")), filename="b", purpose="batch"
    )


def test_files_expire_after_the_set_days_and_are_then_deleted(settings):
    settings.BATCHES = {**settings.BATCHES, "files_expire_days": 30}
    kept = services.create_file(
        owner="env:0", upload=Upload(chat_line("a")), filename="kept", purpose="batch"
    )
    old = services.create_file(
        owner="env:0", upload=Upload(chat_line("b")), filename="old", purpose="batch"
    )
    assert kept.expires_at == kept.created_at + dt.timedelta(days=30)
    assert presenters.file_object(kept)["expires_at"] == int(kept.expires_at.timestamp())
    StoredFile.objects.filter(pk=old.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    # Expired: gone for its owner at once (not listed, not found, not counted in its storage) ...
    with pytest.raises(NotFound):
        services.get_file(owner="env:0", file_id=old.id)
    listed = services.list_files(owner="env:0", purpose=None, limit=10, after=None)
    assert [found.id for found in listed] == [kept.id]
    assert services.stored_bytes("env:0") == kept.bytes
    # ... and deleted, bytes and row, by the runners' clean-up.
    assert services.clean_files() == 1
    assert not storage.path_of(old.id).exists()
    assert not StoredFile.objects.filter(pk=old.pk).exists()
    assert storage.path_of(kept.id).exists()
    assert services.clean_files() == 0


def test_with_no_expiry_files_are_kept_until_deleted(settings):
    settings.BATCHES = {**settings.BATCHES, "files_expire_days": 0}
    kept = services.create_file(
        owner="env:0", upload=Upload(chat_line("a")), filename="a", purpose="batch"
    )
    assert kept.expires_at is None
    assert presenters.file_object(kept)["expires_at"] is None
    assert services.clean_files() == 0
    assert services.get_file(owner="env:0", file_id=kept.id) == kept


def test_the_leftovers_of_a_crashed_upload_are_deleted_once_stale():
    folder = storage.files_dir()
    stale = folder / f"{services.new_file_id()}.part"
    fresh = folder / f"{services.new_file_id()}.part"
    other = folder / "notes.part"  # not the gateway's: never touched
    for path in (stale, fresh, other):
        path.write_bytes(b"{}")
    a_day_ago = time.time() - services.STALE_PART_SECONDS - 60
    os.utime(stale, (a_day_ago, a_day_ago))
    os.utime(other, (a_day_ago, a_day_ago))

    assert services.clean_files() == 1
    assert not stale.exists() and fresh.exists() and other.exists()
