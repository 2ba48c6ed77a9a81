"""The runtime builds each part once, drops the parts a changed setting was read into, and
starts and stops its lifecycles in order."""

from __future__ import annotations

import threading

from django.test import override_settings

from infra.runtime import Runtime, get_runtime, install_runtime


class Counter:
    built = 0

    def __init__(self) -> None:
        type(self).built += 1
        self.value = 0


class FromSettings:
    SETTINGS = ("RUNTIME_TEST_VALUE",)

    def __init__(self) -> None:
        from django.conf import settings

        self.value = getattr(settings, "RUNTIME_TEST_VALUE", None)


def test_a_part_is_built_once_and_shared():
    runtime = Runtime()
    before = Counter.built
    first = runtime.part(Counter)
    first.value = 7
    assert runtime.part(Counter) is first
    assert Counter.built == before + 1


def test_a_part_is_built_once_when_threads_race():
    runtime = Runtime()
    before = Counter.built
    gate = threading.Barrier(8)
    seen: list[Counter] = []

    def take() -> None:
        gate.wait()
        seen.append(runtime.part(Counter))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter.built == before + 1
    assert all(part is seen[0] for part in seen)


def test_a_new_runtime_starts_with_no_state():
    old = Runtime()
    old.part(Counter).value = 3
    assert Runtime().part(Counter).value == 0


def test_a_changed_setting_drops_only_the_parts_read_from_it():
    runtime = install_runtime(Runtime())
    with override_settings(RUNTIME_TEST_VALUE="first"):
        kept = runtime.part(Counter)
        assert runtime.part(FromSettings).value == "first"
        with override_settings(RUNTIME_TEST_VALUE="second"):
            assert runtime.part(FromSettings).value == "second"
        assert runtime.part(FromSettings).value == "first"
    assert runtime.part(Counter) is kept
    assert runtime.peek(FromSettings) is None  # dropped, not rebuilt until used


def test_a_part_can_be_replaced_and_dropped():
    runtime = Runtime()
    mine = Counter()
    assert runtime.replace(Counter, mine) is runtime.part(Counter) is mine
    runtime.drop(Counter)
    assert runtime.peek(Counter) is None
    assert runtime.part(Counter) is not mine


async def test_lifecycles_run_in_the_order_given():
    calls: list[str] = []

    def step(name: str):
        async def run() -> None:
            calls.append(name)

        return run

    runtime = Runtime(
        starts=[("a", step("start a")), ("b", step("start b"))],
        stops=[("b", step("stop b")), ("a", step("stop a"))],
    )
    assert runtime.composed and not Runtime().composed
    await runtime.start()
    await runtime.stop()
    assert calls == ["start a", "start b", "stop b", "stop a"]


def test_each_test_gets_a_fresh_runtime_from_the_fixture(runtime):
    assert get_runtime() is runtime
    assert runtime.composed  # built as start-up builds it
    assert runtime.peek(Counter) is None
