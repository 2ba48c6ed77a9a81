"""A catalog reload asked for with `manage.py reload_models` is in the audit log."""

from __future__ import annotations

import io
import subprocess

import pytest
from django.core.management import call_command

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_reload_models_records_who_reloaded_which_models(settings, tmp_path):
    # Stands in for the server: SIGHUP ends it (by default, even if this run ignores SIGHUP,
    # as under nohup: an ignored signal stays ignored across exec).
    server = subprocess.Popen(["/usr/bin/env", "--default-signal=HUP", "sleep", "60"])
    try:
        pid_file = tmp_path / "llmapi.pid"
        pid_file.write_text(f"{server.pid}\n")
        settings.SERVER_PID_FILE = str(pid_file)
        call_command("reload_models", stdout=io.StringIO())
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    row = AuditEvent.objects.get(action="catalog.reload")
    assert row.actor_name.startswith("manage.py reload_models (system user ")
    assert row.after["models"]


def test_a_check_only_run_records_nothing(settings):
    call_command("reload_models", check=True, stdout=io.StringIO())
    assert not AuditEvent.objects.exists()
