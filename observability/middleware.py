"""
One middleware that times each request, adds the timing headers, and, when the last byte has
gone out (after the stream, for streamed answers), records the request's metrics and writes
its summary log line.

Layers below tell it what only they know through `observability.timing`:
`span("queue")` around the wait for a slot, `begin("upstream_ttfb")` / `end("upstream_ttfb")`
around the wait for the model server's first byte, `add("upstream", seconds)` for time spent
on model servers, `mark("ttft")` at the first token, and `annotate(model=..., team=...,
key_id=..., key_prefix=..., replica=..., prompt_tokens=..., completion_tokens=...)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

from observability import metrics, timing
from observability.json_logs import log_request_summary

# Probes and scrapes: frequent, and not what an operator asks about.
UNRECORDED_ENDPOINTS = frozenset({"metrics", "healthz", "readyz", "favicon"})


class ObservabilityMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.timing_headers = getattr(settings, "OBSERVABILITY_TIMING_HEADERS", True)
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        request_timing = timing.start()
        response = await self.get_response(request)
        if self.timing_headers:
            for name, value in timing.response_headers(request_timing).items():
                response[name] = value
        match = request.resolver_match
        endpoint = match.url_name if match is not None and match.url_name else "unmatched"
        if endpoint in UNRECORDED_ENDPOINTS:
            return response
        if response.streaming:
            content = response.streaming_content
            if response.is_async:
                response.streaming_content = self._async_stream(
                    content, request, response, endpoint, request_timing
                )
            else:
                response.streaming_content = self._sync_stream(
                    content, request, response, endpoint, request_timing
                )
        else:
            finish_request(request.method, endpoint, response.status_code, request_timing)
        return response

    async def _async_stream(
        self, content: AsyncIterator[bytes], request, response, endpoint, request_timing
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in content:
                yield chunk
        finally:
            finish_request(request.method, endpoint, response.status_code, request_timing)

    def _sync_stream(
        self, content: Iterator[bytes], request, response, endpoint, request_timing
    ) -> Iterator[bytes]:
        try:
            yield from content
        finally:
            finish_request(request.method, endpoint, response.status_code, request_timing)


def finish_request(
    method: str, endpoint: str, status: int, request_timing: timing.RequestTiming
) -> None:
    """Record the request's metrics and write its summary line."""
    fields: dict[str, Any] = request_timing.fields
    durations = request_timing.durations
    latency = request_timing.elapsed()
    ttft = durations.get("ttft")
    upstream = durations.get("upstream")
    queue = durations.get("queue")
    metrics.record_request(
        model=fields.get("model"),
        endpoint=endpoint,
        status=status,
        duration=latency,
        team=fields.get("team"),
        key_id=fields.get("key_id"),
        ttft=ttft,
        upstream_seconds=upstream,
        queue_seconds=queue or 0.0,
        prompt_tokens=fields.get("prompt_tokens"),
        completion_tokens=fields.get("completion_tokens"),
    )
    log_request_summary(
        method=method,
        endpoint=endpoint,
        status=status,
        latency=latency,
        model=fields.get("model"),
        team=fields.get("team"),
        key_prefix=fields.get("key_prefix"),
        replica=fields.get("replica"),
        prompt_tokens=fields.get("prompt_tokens"),
        completion_tokens=fields.get("completion_tokens"),
        ttft=ttft,
        queue=queue,
        upstream=upstream,
        messages=fields.get("messages"),
        response=fields.get("response"),
    )


def record_quota_refusal(exc: Exception) -> None:
    """
    A 429 from a key's or a team's quota, labelled with the request's model, team and key as
    far as they are known when it was refused. Which quota: the exception's `scope` ("key" or
    "team") when it carries one, else what its message names.
    """
    scope = getattr(exc, "scope", None)
    if scope not in ("key", "team"):
        scope = "team" if "team's" in str(getattr(exc, "detail", exc)) else "key"
    request_timing = timing.current()
    fields: dict[str, Any] = request_timing.fields if request_timing is not None else {}
    metrics.record_rate_limited(
        f"{scope}_quota", fields.get("model"), fields.get("team"), fields.get("key_id")
    )
