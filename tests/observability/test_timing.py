from __future__ import annotations

import asyncio
import contextvars

import pytest

from observability import timing
from tests.waiting import FakeClock

pytestmark = [pytest.mark.fake_clock]


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


def test_phases_become_server_timing_and_llmapi_headers(clock):
    request_timing = timing.start()
    with timing.span("queue"):
        clock.advance(0.01)
    clock.advance(0.003)
    timing.begin("upstream_ttfb")
    clock.advance(0.02)
    timing.end("upstream_ttfb")
    headers = timing.response_headers(request_timing)
    assert headers == {
        "Server-Timing": "queue;dur=10.0, upstream_ttfb;dur=20.0, total;dur=33.0",
        "x-llmapi-queue-ms": "10.0",
        "x-llmapi-upstream-ttfb-ms": "20.0",
        "x-llmapi-total-ms": "33.0",
    }


def test_response_headers_agree_with_each_other():
    request_timing = timing.start()
    timing.add("queue", 0.0123)
    headers = timing.response_headers(request_timing)
    total = headers["x-llmapi-total-ms"]
    assert headers["Server-Timing"] == f"queue;dur=12.3, total;dur={total}"
    assert headers["x-llmapi-queue-ms"] == "12.3"


def test_mark_measures_from_the_start_unless_the_phase_was_begun(clock):
    request_timing = timing.start()
    clock.advance(0.01)
    timing.mark("ttft")
    assert request_timing.durations["ttft"] == pytest.approx(0.01)
    timing.begin("queue")
    clock.advance(0.002)
    timing.mark("queue")
    assert request_timing.durations["queue"] == pytest.approx(0.002)


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


def test_mark_once_keeps_the_first_token_of_a_request(clock):
    request_timing = timing.start()
    clock.advance(0.01)
    timing.mark_once("ttft")
    clock.advance(0.01)
    timing.mark_once("ttft")  # a repair attempt's answer, say
    assert request_timing.durations["ttft"] == pytest.approx(0.01)


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
