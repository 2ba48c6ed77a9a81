"""The audit log is append-only: rows are never changed or deleted, except by the retention job."""

from __future__ import annotations

import datetime as dt

import pytest

from audit.models import AppendOnly, AuditEvent
from audit.retention import prune
from audit.services import Actor, record

pytestmark = pytest.mark.django_db


def make_row(**fields) -> AuditEvent:
    row = record(
        actor=Actor(name="ada", ip="192.0.2.1"),
        action=fields.pop("action", "team.limits"),
        object_type="team",
        object_id="1",
        object_repr="ml",
        before={"requests_per_minute": 1},
        after={"requests_per_minute": 2},
    )
    assert row is not None
    return row


def test_a_row_cannot_be_changed():
    row = make_row()
    row.actor_name = "someone else"
    with pytest.raises(AppendOnly):
        row.save()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=row.pk).update(actor_name="someone else")
    assert AuditEvent.objects.get(pk=row.pk).actor_name == "ada"


def test_a_row_cannot_be_deleted():
    row = make_row()
    with pytest.raises(AppendOnly):
        row.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=row.pk).exists()


def test_retention_deletes_only_rows_older_than_the_period():
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    old = AuditEvent.objects.create(at=now - dt.timedelta(days=31), actor_name="a", action="x")
    kept = AuditEvent.objects.create(at=now - dt.timedelta(days=29), actor_name="a", action="x")
    assert prune(days=30, now=now) == 1
    assert not AuditEvent.objects.filter(pk=old.pk).exists()
    assert AuditEvent.objects.filter(pk=kept.pk).exists()


def test_a_change_that_changed_nothing_is_not_recorded():
    assert (
        record(actor=Actor(name="ada"), action="team.limits", before={"a": 1}, after={"a": 1})
        is None
    )
    assert AuditEvent.objects.count() == 0


def test_the_system_actor_names_the_command_and_account():
    actor = Actor.system("manage.py reload_models")
    assert actor.name.startswith("manage.py reload_models (system user ")
    assert actor.user is None
