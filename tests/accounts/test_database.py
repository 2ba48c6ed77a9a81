import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import ROOT


def test_ensure_database_creates_and_migrates_a_fresh_sqlite_file(tmp_path):
    database = tmp_path / "var" / "llmapi.sqlite3"
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DATABASE__SQLITE_PATH": str(database),
        "API_KEYS__PEPPER_FILE": str(tmp_path / "var" / "pepper"),
    }
    env.pop("DATABASE_URL", None)
    script = "from accounts.database import ensure_database; ensure_database(); ensure_database()"
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    tables = {row[0] for row in sqlite3.connect(database).execute("SELECT name FROM sqlite_master")}
    assert {"accounts_apikey", "accounts_team", "usage_usagerecord", "usage_usagehourly"} <= tables
    assert stat.S_IMODE((tmp_path / "var" / "pepper").stat().st_mode) == 0o600


@pytest.mark.django_db
def test_the_configured_database_is_used():
    expected = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    assert connection.vendor == expected
    if expected == "postgresql":
        # The pool is on: a bounded number of connections per worker.
        assert connection.settings_dict["OPTIONS"]["pool"]["max_size"] >= 1
