"""Reloading the catalog (SIGHUP, `reload_models`) never dies on a hostile file."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.management import CommandError, call_command

from server.reload import reload_catalog

NESTED = "models:\n  a:\n    servers: [http://h:1]\n    params: " + "[" * 20_000 + "]" * 20_000


@pytest.fixture
def nested_catalog(tmp_path, settings):
    path = tmp_path / "models.yaml"
    path.write_text(NESTED)
    settings.LLMAPI_MODELS_FILE = str(path)
    return path


def test_sighup_with_a_deeply_nested_file_logs_one_line_and_keeps_the_catalog(
    nested_catalog, caplog
):
    with caplog.at_level(logging.ERROR, logger="server.reload"):
        assert reload_catalog() is False
    [record] = caplog.records
    assert record.exc_info is None
    assert "nested more than 16 levels deep" in record.getMessage()
    assert f"{nested_catalog}, line 4" in record.getMessage()


def test_reload_models_refuses_a_deeply_nested_file_with_its_line(nested_catalog):
    with pytest.raises(CommandError) as error:
        call_command("reload_models", "--check", stdout=io.StringIO())
    assert f"{nested_catalog}, line 4: nested more than 16 levels deep" in str(error.value)


def test_serve_refuses_a_deeply_nested_file_with_its_line_and_no_traceback(nested_catalog):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.fake_upstream import _free_port

    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(_free_port())],
        cwd=ROOT,
        env={
            **os.environ,
            "ENV_FILE": "/dev/null",
            "API_KEY": "k",
            "LLMAPI_MODELS_FILE": str(nested_catalog),
            "DATABASE__SQLITE_PATH": str(nested_catalog.parent / "db.sqlite3"),
            "API_KEYS__PEPPER_FILE": str(nested_catalog.parent / "api-key-pepper"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"{nested_catalog}, line 4: nested more than 16 levels deep" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
