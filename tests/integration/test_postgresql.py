"""
The database tests of accounts, limits, usage and batches again (those that use the database, by
their fixtures or marker: `--database-tests-only`), on a real PostgreSQL server started for the
occasion (see tests/postgresql.py), in a pytest run of their own with DATABASE_URL.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.postgresql import PostgresServer, find_bin_dir

BIN_DIR = find_bin_dir()

pytestmark = [
    pytest.mark.skipif(
        BIN_DIR is None,
        reason="PostgreSQL binaries not found (scripts/test installs Debian's postgresql)",
    ),
    pytest.mark.skipif(
        bool(os.environ.get("DATABASE_URL")), reason="already running against DATABASE_URL"
    ),
]


@pytest.fixture(scope="module")
def postgresql():
    assert BIN_DIR is not None
    server = PostgresServer(BIN_DIR)
    server.start()
    yield server
    server.stop()


def test_database_tests_pass_on_postgresql(postgresql, tmp_path):
    # Not measured for coverage: the same code runs, and is measured, in the main run; measuring
    # it again would slow this run by about a third.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")},
        "ENV_FILE": "/dev/null",
        "DATABASE_URL": postgresql.url,
        "USAGE__JOURNAL_DIR": str(tmp_path / "journal"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "--database-tests-only",
            "tests/accounts",
            "tests/limits",
            "tests/usage",
            "tests/batches",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "PASSED tests/accounts/test_database.py::test_the_configured_database_is_used" in output
    assert re.search(r"^\d+ passed[ ,]", output, re.MULTILINE), output[-2000:]
