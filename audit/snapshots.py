"""
A model instance as a JSON-safe dict for the audit log's before and after.

Fields whose name says they hold a secret (a hash, a password, a token) are never read.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from django.db import models

SECRET_FIELD_MARKERS = ("secret", "password", "hash", "token", "pepper")


def is_secret_field(name: str) -> bool:
    return any(marker in name.lower() for marker in SECRET_FIELD_MARKERS)


def json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return str(value)
    return value


def snapshot(instance: models.Model, *, extra: dict | None = None) -> dict:
    """Concrete fields (a foreign key as its target's text), minus secrets, plus `extra`."""
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if is_secret_field(field.name) or field.primary_key:
            continue
        if field.is_relation:
            related_id = getattr(instance, field.attname)
            data[field.name] = None if related_id is None else str(getattr(instance, field.name))
        else:
            data[field.name] = json_value(field.value_from_object(instance))
    for name, value in (extra or {}).items():
        if not is_secret_field(name):
            data[name] = json_value(value)
    return data
