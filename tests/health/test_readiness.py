"""Readiness reports: one probe round per period, however many callers; a small summary."""

from __future__ import annotations

import asyncio

from health.readiness import SUMMARY_NAMES, ReadinessReports, summarize, visible_to


def report_of(ready: dict[str, bool]) -> dict:
    return {
        "ready": all(ready.values()),
        "defaults": {"text": None, "image": None},
        "models": {name: {"name": name, "ready": ok} for name, ok in ready.items()},
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_callers_share_one_round_and_its_answer_until_it_is_too_old():
    clock = FakeClock()
    rounds = 0
    release = asyncio.Event()

    async def compute():
        nonlocal rounds
        rounds += 1
        await release.wait()
        return report_of({"a": True})

    reports = ReadinessReports(compute=compute, max_age=2.0, clock=clock)
    waiting = [asyncio.create_task(reports.report()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(*waiting)
    assert rounds == 1 and all(answer is answers[0] for answer in answers)

    clock.now += 1.9
    await reports.report()
    assert rounds == 1
    clock.now += 0.2
    await reports.report()
    assert rounds == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_round():
    release = asyncio.Event()

    async def compute():
        await release.wait()
        return report_of({"a": True})

    reports = ReadinessReports(compute=compute, max_age=2.0, clock=FakeClock())
    first = asyncio.create_task(reports.report())
    await asyncio.sleep(0)
    first.cancel()
    second = asyncio.create_task(reports.report())
    await asyncio.sleep(0)
    release.set()
    assert (await second)["ready"] is True


async def test_a_failed_round_is_not_kept():
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("probe failed")
        return report_of({"a": True})

    reports = ReadinessReports(compute=compute, max_age=2.0, clock=FakeClock())
    try:
        await reports.report()
    except RuntimeError:
        pass
    assert (await reports.report())["ready"] is True


def test_the_summary_counts_models_and_names_only_the_first_that_are_not_ready():
    ready = {f"m{i}": i % 2 == 0 for i in range(10_000)}
    summary = summarize(report_of(ready))
    assert summary["models_total"] == 10_000
    assert summary["models_ready"] == 5_000
    assert summary["not_ready"] == [f"m{i}" for i in range(1, 2 * SUMMARY_NAMES, 2)]
    assert summary["not_ready_unlisted"] == 5_000 - SUMMARY_NAMES
    assert "models" not in summary


def test_a_key_limited_to_some_models_sees_only_those():
    report = report_of({"a": True, "b": False})
    assert set(visible_to(report, lambda name: name == "a")["models"]) == {"a"}
    assert set(visible_to(report, None)["models"]) == {"a", "b"}
