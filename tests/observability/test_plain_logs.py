"""Plain-format log lines: a client's text never starts a line of its own."""

from __future__ import annotations

import copy
import io
import logging
import logging.config
from http import HTTPStatus

import pytest
from django.conf import settings

from observability.json_logs import apply_to_uvicorn_log_config
from observability.plain_logs import (
    EscapeControlCharactersFilter,
    escape_control_characters,
)

FORGED = "2026-01-01 00:00:00,000 INFO llmapi.requests [abc] POST openai-chat 200 in 1.0 ms"


@pytest.fixture
def plain_log():
    """The console handler exactly as settings.LOGGING builds it, writing to a buffer."""
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"]["class"] = "logging.StreamHandler"
    stream = io.StringIO()
    config["handlers"]["console"]["stream"] = stream
    config["root"]["level"] = "INFO"
    logging.config.dictConfig(config)
    try:
        yield stream
    finally:
        logging.config.dictConfig(settings.LOGGING)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain name", "plain name"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("line\u2028sep\x85", "line\\u2028sep\\x85"),
        ("tab\there", "tab\\there"),
        ("émoji 🙂", "émoji 🙂"),
    ],
)
def test_escape_control_characters(text, expected):
    assert escape_control_characters(text) == expected


def test_the_plain_format_escapes_a_newline_in_a_model_name_and_a_tool_name(plain_log):
    logger = logging.getLogger("api.exceptions")
    logger.info("%s %s", 404, f"The model 'x\n{FORGED}' does not exist.")
    logger.warning(f"tool name rejected: get\r\n{FORGED}")
    lines = plain_log.getvalue().splitlines()
    assert len(lines) == 2
    assert not any(line.startswith(FORGED) for line in lines)
    assert lines[0].endswith(f"404 The model 'x\\n{FORGED}' does not exist.")
    assert lines[1].endswith(f"tool name rejected: get\\r\\n{FORGED}")


def test_a_traceback_is_indented_so_no_line_passes_for_a_record(plain_log):
    try:
        raise ValueError(f"unknown model 'x\n{FORGED}'")
    except ValueError:
        logging.getLogger("api.exceptions").exception("Unhandled error")
    first, *rest = plain_log.getvalue().splitlines()
    assert first.endswith("Unhandled error")
    assert rest and all(line.startswith("  ") for line in rest)
    assert any("ValueError: unknown model 'x" in line for line in rest)


def test_an_exception_passed_as_an_argument_is_escaped(plain_log):
    logging.getLogger("api.streaming").warning("Stream failed: %s", ValueError(f"a\n{FORGED}"))
    assert plain_log.getvalue().count("\n") == 1
    assert f"Stream failed: a\\n{FORGED}" in plain_log.getvalue()


def test_uvicorn_plain_handlers_escape_too():
    import uvicorn

    plain = apply_to_uvicorn_log_config(copy.deepcopy(uvicorn.config.LOGGING_CONFIG))
    assert all("escape_control" in h["filters"] for h in plain["handlers"].values())
    json_config = apply_to_uvicorn_log_config(
        copy.deepcopy(uvicorn.config.LOGGING_CONFIG), log_format="json"
    )
    assert not any("escape_control" in h["filters"] for h in json_config["handlers"].values())
    # The access formatter reads its arguments by position: they stay a tuple of five.
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4", "GET", "/x\nforged", "1.1", 200), None,
    )  # fmt: skip
    EscapeControlCharactersFilter().filter(record)
    assert record.getMessage() == '1.2.3.4 - "GET /x\\nforged HTTP/1.1" 200'


def test_a_newline_in_a_model_name_does_not_forge_a_gateway_log_line(gateway):
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": f"nope\n{FORGED}", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == HTTPStatus.NOT_FOUND
    log = gateway.log()
    assert f"\n{FORGED}" not in log
    assert f"nope\\n{FORGED}" in log
