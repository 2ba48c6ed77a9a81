import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import ROOT


def sqlite_shell(folder, script: str) -> subprocess.CompletedProcess:
    """Run `script` in `manage.py shell` on a SQLite file (and key pepper) in `folder`."""
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DATABASE__SQLITE_PATH": str(folder / "llmapi.sqlite3"),
        "API_KEYS__PEPPER_FILE": str(folder / "pepper"),
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ensure_database_creates_and_migrates_a_fresh_sqlite_file(tmp_path):
    database = tmp_path / "var" / "llmapi.sqlite3"
    script = "from accounts.database import ensure_database; ensure_database(); ensure_database()"
    result = sqlite_shell(tmp_path / "var", script)
    assert result.returncode == 0, result.stderr[-3000:]
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


SQLITE_WRITE_AFTER_READ = """
import sqlite3
from django.conf import settings
from django.db import transaction
from accounts.database import ensure_database
from accounts.models import Team

ensure_database()
other = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=0, isolation_level=None)
other.execute("CREATE TABLE probe (x)")
with transaction.atomic():
    Team.objects.filter(name="readers").exists()  # reads first ...
    try:  # ... while another process writes ...
        other.execute("INSERT INTO probe VALUES (1)")
        print("the other process wrote")
    except sqlite3.OperationalError as exc:
        print("the other process waits:", exc)
    Team.objects.create(name="readers")  # ... then writes
print("committed")
"""


def test_a_sqlite_transaction_that_reads_then_writes_is_not_failed_by_another_writer(tmp_path):
    # Deferred transactions (SQLite's default) take the write lock only at their first write:
    # had another process written since their read, that write fails at once, without waiting.
    result = sqlite_shell(tmp_path, SQLITE_WRITE_AFTER_READ)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "the other process waits: database is locked",
        "committed",
    ]
