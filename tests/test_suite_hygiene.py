"""
The suite stays free of assertions on elapsed wall-clock time: a busy machine makes any such
bound red without a bug. Time that is the behaviour is faked (`@pytest.mark.fake_clock`), and
latency figures are measured in `bench/`.

The scan follows, inside each function, what comes from a clock (`time.monotonic()`,
`time.perf_counter()`, `time.time()`, `loop.time()`, ...): a difference involving a clock
reading is an elapsed time, and so is a name assigned from one or a list one is appended to.
An `assert` that bounds such an elapsed time from above (`elapsed < x`, `x >= elapsed`) is
refused, unless its test (or module) is marked `fake_clock`. A lower bound ("Retry-After was
honoured: at least a second passed") stays allowed: a slow machine only makes it truer.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCK_FUNCTIONS = {
    "monotonic",
    "perf_counter",
    "time",
    "monotonic_ns",
    "perf_counter_ns",
    "time_ns",
}
BELOW = (ast.Lt, ast.LtE)  # left side bounded from above
ABOVE = (ast.Gt, ast.GtE)  # right side bounded from above


def _is_clock_call(node: ast.AST) -> bool:
    """`time.monotonic()`, `loop.time()`, `perf_counter()`: a reading of a clock."""
    if not isinstance(node, ast.Call) or node.args or node.keywords:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in CLOCK_FUNCTIONS


def _marked_fake_clock(decorators: list[ast.expr]) -> bool:
    for decorator in decorators:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fake_clock":
            return True
    return False


def _module_marked_fake_clock(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return any(
                isinstance(n, ast.Attribute) and n.attr == "fake_clock" for n in ast.walk(node)
            )
    return False


class _Function:
    """What in one function comes from a clock: readings, and elapsed times derived from them."""

    def __init__(self, function: ast.AST) -> None:
        self.readings: set[str] = set()
        self.elapsed: set[str] = set()
        # Two passes: a name may be read in a loop before the line that assigns it.
        for _ in range(2):
            for node in ast.walk(function):
                self._learn(node)

    def _learn(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and node.value:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if self.is_elapsed(node.value):
                self.elapsed.update(names)
            elif self.is_reading(node.value):
                self.readings.update(names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("append", "extend", "add")
            and isinstance(node.func.value, ast.Name)
            and any(self.is_elapsed(arg) for arg in node.args)
        ):
            self.elapsed.add(node.func.value.id)

    def is_reading(self, node: ast.AST) -> bool:
        return any(
            _is_clock_call(n) or (isinstance(n, ast.Name) and n.id in self.readings)
            for n in ast.walk(node)
        )

    def is_elapsed(self, node: ast.AST) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in self.elapsed:
                return True
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub):
                if self.is_reading(n.left) or self.is_reading(n.right):
                    return True
        return False


def elapsed_time_assertions(source: str, filename: str = "<test>") -> list[str]:
    """`file:line` of every assert ordering an elapsed wall-clock time, outside fake clocks."""
    tree = ast.parse(source, filename)
    if _module_marked_fake_clock(tree):
        return []
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    exempt = {
        id(inner)
        for f in functions
        if _marked_fake_clock(f.decorator_list)
        for inner in ast.walk(f)
    }
    for function in functions:
        if id(function) in exempt:
            continue
        clock = _Function(function)
        for node in ast.walk(function):
            if not isinstance(node, ast.Assert):
                continue
            for compare in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
                sides = [compare.left, *compare.comparators]
                for left, op, right in zip(sides, compare.ops, sides[1:], strict=False):
                    bounded = left if isinstance(op, BELOW) else right
                    if isinstance(op, BELOW + ABOVE) and clock.is_elapsed(bounded):
                        found.append(f"{filename}:{node.lineno}")
    return sorted(set(found), key=lambda where: int(where.rsplit(":", 1)[1]))


def test_no_test_asserts_on_elapsed_wall_clock_time():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        where = str(path.relative_to(TESTS.parent))
        found += elapsed_time_assertions(path.read_text(), where)
    assert found == [], (
        "assertions on elapsed wall-clock time fail on a busy machine: wait for the event, "
        "fake the clock (and mark the test fake_clock), or measure it in bench/"
    )


SAMPLE = textwrap.dedent(
    """
    import asyncio, time
    import pytest

    def test_bound_on_a_difference():
        started = time.monotonic()
        work()
        assert time.monotonic() - started < 1.0

    def test_bound_on_a_named_elapsed_time():
        released_at = time.perf_counter()
        admitted_at = time.perf_counter()
        waited = admitted_at - released_at
        assert waited <= 0.1

    async def test_bound_on_a_quantile_of_latencies():
        loop = asyncio.get_running_loop()
        latencies = []
        for _ in range(3):
            started = loop.time()
            await probe()
            latencies.append(loop.time() - started)
        assert max(latencies) < 2.0

    def test_bound_from_above_written_backwards():
        started = time.monotonic()
        work()
        assert 0 < 5 > time.monotonic() - started

    def test_a_lower_bound_is_fine():
        started = time.monotonic()
        wait_for_retry_after()
        assert time.monotonic() - started >= 1.0

    def test_order_of_events_is_fine():
        first = time.monotonic()
        second = time.monotonic()
        assert first <= second

    def test_polling_with_a_deadline_is_fine():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not done():
            time.sleep(0.01)
        assert done()

    @pytest.mark.fake_clock
    def test_a_faked_clock_may_be_compared(clock):
        started = time.monotonic()
        clock.advance(5)
        assert time.monotonic() - started >= 5
    """
)


def test_the_scan_finds_upper_bounds_and_spares_lower_bounds_order_polls_and_fake_clocks():
    assert elapsed_time_assertions(SAMPLE, "sample.py") == [
        "sample.py:8",
        "sample.py:14",
        "sample.py:23",
        "sample.py:28",
    ]


def test_a_module_marked_fake_clock_is_spared():
    marked = "import pytest, time\npytestmark = [pytest.mark.fake_clock]\n" + SAMPLE
    assert elapsed_time_assertions(marked) == []
