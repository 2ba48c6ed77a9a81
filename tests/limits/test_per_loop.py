"""The running loop found without a system call, and state kept per event loop."""

from __future__ import annotations

import asyncio

import pytest

from limits.per_loop import PerLoop, running_loop


def test_running_loop_is_each_loops_own_and_none_outside_a_loop():
    seen = []

    async def look() -> None:
        assert running_loop() is asyncio.get_running_loop()
        seen.append(running_loop())

    asyncio.run(look())
    asyncio.run(look())
    assert seen[0] is not seen[1]
    with pytest.raises(RuntimeError):
        running_loop()  # no loop runs here, although one ran before


def test_per_loop_values_are_made_once_per_loop_and_forgotten_on_pop():
    made = []
    state: PerLoop[list[int]] = PerLoop(lambda: made.append(1) or [])

    async def use() -> tuple[list[int], list[int] | None]:
        assert state.peek() is None
        first = state.get()
        assert state.get() is first
        return first, state.pop()

    first, popped = asyncio.run(use())
    assert popped is first
    second, _ = asyncio.run(use())
    assert second is not first
    assert len(made) == 2
