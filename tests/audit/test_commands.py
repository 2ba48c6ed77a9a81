"""`manage.py export_audit` (JSON lines) and `manage.py prune_audit` (retention)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def rows():
    base = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    for day, action in enumerate(["team.create", "key.create", "key.revoke"]):
        AuditEvent.objects.create(
            at=base + dt.timedelta(days=day),
            actor_name="ada",
            ip="192.0.2.1",
            action=action,
            object_type="key",
            object_id=str(day),
            before=None if day == 0 else {"revoked": False},
            after={"revoked": day == 2},
        )


def test_export_writes_one_json_object_per_row_oldest_first():
    rows()
    out = io.StringIO()
    call_command("export_audit", stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["action"] for line in lines] == ["team.create", "key.create", "key.revoke"]
    assert lines[2]["before"] == {"revoked": False} and lines[2]["after"] == {"revoked": True}
    assert lines[0]["actor"] == "ada" and lines[0]["ip"] == "192.0.2.1"
    assert lines[0]["at"] == "2026-05-01T00:00:00+00:00"


def test_export_selects_a_period_and_writes_a_file(tmp_path):
    rows()
    target = tmp_path / "audit.jsonl"
    call_command("export_audit", since="2026-05-02", until="2026-05-03", output=str(target))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["key.create"]


def test_export_refuses_a_date_it_cannot_read():
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("export_audit", since="yesterday")


def test_prune_uses_the_retention_setting(settings):
    settings.AUDIT_RETENTION_DAYS = 1
    AuditEvent.objects.create(
        at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2), actor_name="a", action="x"
    )
    AuditEvent.objects.create(actor_name="a", action="y")
    out = io.StringIO()
    call_command("prune_audit", stdout=out)
    assert "Deleted 1 audit row(s)" in out.getvalue()
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["y"]
    with pytest.raises(CommandError):
        call_command("prune_audit", days=0)
