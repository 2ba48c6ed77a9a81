from __future__ import annotations

import asyncio
import contextvars
import re
import time

from observability import timing


def test_phases_become_server_timing_and_llmapi_headers():
    request_timing = timing.start()
    with timing.span("queue"):
        time.sleep(0.01)
    timing.begin("upstream_ttfb")
    time.sleep(0.02)
    timing.end("upstream_ttfb")
    headers = timing.response_headers(request_timing)
    header = headers.pop("Server-Timing")
    match = re.fullmatch(
        r"queue;dur=([\d.]+), upstream_ttfb;dur=([\d.]+), total;dur=([\d.]+)", header
    )
    assert match, header
    queue, ttfb, total = (float(value) for value in match.groups())
    assert queue >= 10 and ttfb >= 20
    # Each value is rounded to 0.1 ms on its own, so the parts may add up to 0.1 ms more.
    assert total >= queue + ttfb - 0.1 - 1e-9
    assert set(headers) == {"x-llmapi-queue-ms", "x-llmapi-upstream-ttfb-ms", "x-llmapi-total-ms"}
    assert float(headers["x-llmapi-queue-ms"]) == queue


def test_response_headers_agree_with_each_other():
    request_timing = timing.start()
    timing.add("queue", 0.0123)
    headers = timing.response_headers(request_timing)
    total = headers["x-llmapi-total-ms"]
    assert headers["Server-Timing"] == f"queue;dur=12.3, total;dur={total}"
    assert headers["x-llmapi-queue-ms"] == "12.3"


def test_mark_measures_from_the_start_unless_the_phase_was_begun():
    request_timing = timing.start()
    time.sleep(0.01)
    timing.mark("ttft")
    assert request_timing.durations["ttft"] >= 0.01
    timing.begin("queue")
    timing.mark("queue")
    assert request_timing.durations["queue"] < request_timing.durations["ttft"]


def test_repeated_phases_add_up():
    request_timing = timing.start()
    timing.add("upstream", 0.25)
    timing.add("upstream", 0.5)
    assert request_timing.durations["upstream"] == 0.75


def test_phases_not_in_the_header_list_stay_out_of_headers():
    request_timing = timing.start()
    timing.add("upstream", 0.1)
    assert timing.response_headers(request_timing)["Server-Timing"].startswith("total;dur=")


def test_without_a_started_timing_every_call_is_a_no_op():
    def outside_a_request():
        assert timing.current() is None
        timing.mark("queue")
        timing.annotate(model="m")
        with timing.span("queue"):
            pass
        return timing.current()

    # An empty context, as code outside any request has.
    assert contextvars.Context().run(outside_a_request) is None


async def test_each_task_sees_its_own_request():
    async def serve(model: str) -> str:
        timing.start()
        timing.annotate(model=model)
        await asyncio.sleep(0.01)
        current = timing.current()
        assert current is not None
        return current.fields["model"]

    assert await asyncio.gather(serve("a"), serve("b")) == ["a", "b"]


def test_mark_once_keeps_the_first_token_of_a_request():
    request_timing = timing.start()
    timing.mark_once("ttft")
    first = request_timing.durations["ttft"]
    time.sleep(0.01)
    timing.mark_once("ttft")  # a repair attempt's answer, say
    assert request_timing.durations["ttft"] == first


class _DatabaseKey:
    key_id = 42
    prefix = "abcd1234"
    team_name = "research"


class _BootstrapKey:
    key_id = None
    prefix = ""
    team_name = ""


def test_annotate_principal_takes_whatever_the_caller_is():
    request_timing = timing.start()
    timing.annotate_principal(_DatabaseKey())
    assert request_timing.fields == {"team": "research", "key_id": "42", "key_prefix": "abcd1234"}
    timing.annotate_principal(_BootstrapKey())
    assert request_timing.fields == {"team": None, "key_id": None, "key_prefix": None}
    timing.annotate_principal(object())  # an anonymous user: nothing known
    assert request_timing.fields == {"team": None, "key_id": None, "key_prefix": None}
