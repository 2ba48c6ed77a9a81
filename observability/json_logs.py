"""
Structured logs: with LOG_FORMAT=json every log line is one JSON object (time, level, logger,
message, request id, and the request's summary fields when present), for log shippers.

Secrets never reach a log line: anything shaped like a key (`llm_...`, `sk-...`), a Bearer token
or an X-API-Key / api_key value is replaced in the message, in string fields and in tracebacks.
Message content (prompts, answers) is written only when LOG_CONTENT=true, and only in the
fields made for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import orjson

REDACTED = "[redacted]"

_SECRETS = re.compile(
    r"""
    \bllm_[A-Za-z0-9_\-]{12,} | \bsk-[A-Za-z0-9_\-]{6,}                 # API keys by shape
    | (?i:\bbearer)\s+[A-Za-z0-9._~+/=\-]+                              # Authorization values
    | (?i:(?P<label>\b(?:x-api-key|api[_-]?key|access[_-]?token|token|secret|password)
          ["']?\s*[:=]\s*["']?))[^\s"',;&}]+                            # key=value, "key": "value"
    """,
    re.VERBOSE,
)


def _redact(match: re.Match[str]) -> str:
    label = match.group("label")
    if label:
        return label + REDACTED
    if match.group(0)[:6].lower() == "bearer":
        return "Bearer " + REDACTED
    return REDACTED


def scrub(text: str) -> str:
    """The text with every secret-shaped part replaced."""
    return _SECRETS.sub(_redact, text)


# Summary fields a log call may carry (passed with `extra=`), in output order; `key_prefix`
# (the public start of the client's key) comes last.
SUMMARY_FIELDS = (
    "method",
    "endpoint",
    "status",
    "model",
    "team",
    "replica",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "queue_ms",
    "upstream_ms",
)
# Written only with LOG_CONTENT=true.
CONTENT_FIELDS = ("messages", "response")
# A key prefix is a key's public part; never let a whole key through under that name.
KEY_PREFIX_LENGTH = 12


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, *args: Any, log_content: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_content = log_content

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        fields = record.__dict__
        for name in SUMMARY_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = scrub(value) if isinstance(value, str) else value
        key_prefix = fields.get("key_prefix")
        if key_prefix:
            # Shaped like a key, so not scrubbed: cut to the public part instead.
            entry["key_prefix"] = str(key_prefix)[:KEY_PREFIX_LENGTH]
        if self.log_content:
            for name in CONTENT_FIELDS:
                value = fields.get(name)
                if value is not None:
                    entry[name] = value
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = scrub(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


class ScrubSecretsFilter(logging.Filter):
    """Scrubs the message of every record, for handlers with a plain text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


summary_logger = logging.getLogger("llmapi.requests")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def log_request_summary(
    *,
    method: str,
    endpoint: str,
    status: int,
    latency: float,
    model: str | None = None,
    team: str | None = None,
    key_prefix: str | None = None,
    replica: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft: float | None = None,
    queue: float | None = None,
    upstream: float | None = None,
    messages: Any = None,
    response: Any = None,
) -> None:
    """
    The one summary line of a request (times in seconds; logged in milliseconds).

    `messages` and `response` are written only when LOG_CONTENT=true (JSON format only).
    """
    if not summary_logger.isEnabledFor(logging.INFO):
        return
    latency_ms = _ms(latency)
    summary_logger.info(
        "%s %s %s in %s ms",
        method,
        endpoint,
        status,
        latency_ms,
        extra={
            "method": method,
            "endpoint": endpoint,
            "status": status,
            "model": model,
            "team": team,
            "key_prefix": key_prefix[:KEY_PREFIX_LENGTH] if key_prefix else None,
            "replica": replica,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_ms": latency_ms,
            "ttft_ms": _ms(ttft),
            "queue_ms": _ms(queue),
            "upstream_ms": _ms(upstream),
            "messages": messages,
            "response": response,
        },
    )


def apply_to_uvicorn_log_config(
    config: dict[str, Any], *, log_format: str = "plain", log_content: bool = False
) -> dict[str, Any]:
    """
    uvicorn's logging config (a dictConfig dict, changed in place): secrets scrubbed from every
    handler's lines (an access line can carry a query string), and JSON formatters when
    `log_format` is "json", or control characters escaped in plain lines otherwise.
    """
    config.setdefault("filters", {})["scrub_secrets"] = {
        "()": "observability.json_logs.ScrubSecretsFilter"
    }
    if log_format != "json":
        config["filters"]["escape_control"] = {
            "()": "observability.plain_logs.EscapeControlCharactersFilter"
        }
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "scrub_secrets"]
        if log_format != "json":
            handler["filters"].append("escape_control")
    if log_format == "json":
        formatters = config.setdefault("formatters", {})
        for name in list(formatters):
            formatters[name] = {
                "()": "observability.json_logs.JsonFormatter",
                "log_content": log_content,
            }
    return config
