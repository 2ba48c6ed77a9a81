"""Schemathesis fuzzes every operation of our own OpenAPI schema against the live server."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY, ROOT

CHECKS = ",".join(
    [
        "no_gateway_fault",  # tests/schemathesis_hooks.py: no 500, 5xx only as documented
        "hostile_schema_is_refused",  # tests/schemathesis_hooks.py: hostile schemas get a 4xx
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(gateway, upstream):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{gateway.url}/openapi.json",
            "--header",
            f"X-API-Key: {API_KEY}",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "20261126",
            "--no-color",
        ],
        cwd=ROOT,
        # Schemathesis runs none of the gateway's code: only the gateway is measured for coverage.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")},
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "passed" in summary
