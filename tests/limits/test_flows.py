"""The fair-sharing rules (`limits.flows`): who gets a contended model's next free slot."""

from collections import Counter

import pytest

from accounts.principals import Principal
from limits.flows import (
    BATCH,
    BATCH_EVERY,
    INTERACTIVE,
    FairQueue,
    Flow,
    flow_for,
)
from limits.quotas import QuotaSubject

A, B = Flow(team="a", key="a1"), Flow(team="b", key="b1")


def admit(line: FairQueue, count: int) -> list:
    return [line.pop() for _ in range(count)]


def test_one_flow_is_served_first_come_first_served():
    line: FairQueue[int] = FairQueue()
    for n in range(5):
        line.push(A, n)
    assert admit(line, 5) == [0, 1, 2, 3, 4]
    assert line.pop() is None


def test_a_team_asking_once_goes_before_the_rest_of_a_flood():
    line: FairQueue[str] = FairQueue()
    for n in range(24):
        line.push(A, f"a{n}")
    order = []
    for _ in range(4):  # team B asks one question at a time, while A's line stays long
        line.push(B, "b")
        order += admit(line, 2)
    assert order == ["a0", "b", "a1", "b", "a2", "b", "a3", "b"]


def test_weights_3_to_1_share_admissions_3_to_1():
    line: FairQueue[str] = FairQueue()
    heavy, light = Flow(team="heavy", weight=3), Flow(team="light", weight=1)
    for _ in range(100):
        line.push(heavy, "heavy")
        line.push(light, "light")
    assert Counter(admit(line, 80)) == {"heavy": 60, "light": 20}


def test_keys_of_one_team_share_its_turns():
    line: FairQueue[str] = FairQueue()
    for _ in range(10):
        line.push(Flow(team="a", key="busy"), "busy")
    line.push(Flow(team="a", key="quiet"), "quiet")
    line.push(B, "b")
    # The team's turns alternate between its keys; team B has its own turns.
    assert admit(line, 4) == ["busy", "b", "quiet", "busy"]


def test_an_idle_team_earns_no_credit():
    line: FairQueue[str] = FairQueue()
    for _ in range(6):
        line.push(A, "a")
    line.push(B, "b")
    admit(line, 7)  # B had its one turn long ago, A many since: history is gone when idle
    for _ in range(4):
        line.push(B, "b")
    for _ in range(4):
        line.push(A, "a")
    # B is not owed a run of turns for the many A had: A is only one turn behind (the turn it
    # had just had), then the two alternate.
    assert admit(line, 8) == ["b", "b", "a", "b", "a", "b", "a", "a"]


def test_batch_waits_for_interactive_but_gets_one_slot_in_eleven():
    line: FairQueue[str] = FairQueue()
    for _ in range(50):
        line.push(Flow(team="a", priority=BATCH), "batch")
        line.push(Flow(team="b", priority=INTERACTIVE), "interactive")
    first = admit(line, BATCH_EVERY + 1)
    assert first == ["interactive"] * BATCH_EVERY + ["batch"]
    assert Counter(admit(line, 33)) == {"interactive": 30, "batch": 3}


def test_batch_gets_every_slot_interactive_work_leaves_free():
    line: FairQueue[str] = FairQueue()
    for _ in range(5):
        line.push(Flow(priority=BATCH), "batch")
    line.push(Flow(), "interactive")
    assert admit(line, 6) == ["interactive"] + ["batch"] * 5


def test_held_back_batch_is_admitted_only_by_the_anti_starvation_rule():
    line: FairQueue[str] = FairQueue()
    line.push(Flow(priority=BATCH), "batch")
    # The headroom holds batch back and nobody else waits: nobody is admitted.
    assert line.pop(hold_batch=True) is None
    assert line.interactive_waiting == 0
    for _ in range(BATCH_EVERY + 1):
        line.push(Flow(), "interactive")
    assert line.interactive_waiting == BATCH_EVERY + 1
    # Interactive work waiting: batch still gets its turn after BATCH_EVERY of it.
    first = [line.pop(hold_batch=True) for _ in range(BATCH_EVERY + 1)]
    assert first == ["interactive"] * BATCH_EVERY + ["batch"]
    assert line.pop(hold_batch=True) == "interactive"


def test_a_waiter_that_gave_up_leaves_the_line():
    line: FairQueue[str] = FairQueue()
    gone = line.push(A, "gone")
    line.push(A, "stays")
    assert line.remove(gone)
    assert not line.remove(gone)
    assert admit(line, 2) == ["stays", None]
    assert len(line) == 0


def test_tags_stay_small_across_busy_periods():
    line: FairQueue[str] = FairQueue()
    for _ in range(1000):
        for _ in range(3):
            line.push(A, "a")
            line.push(B, "b")
        admit(line, 6)
    assert line._vnow == 0
    assert max(line._finish.values(), default=0) <= 1000


def test_flow_of_a_database_key():
    principal = Principal(
        kind="key",
        key_id=7,
        prefix="abcd1234",
        name="ci",
        team_id=3,
        team_name="research",
        allowed_models=frozenset(),
        expires_at=None,
        quota=QuotaSubject(key_id="7"),
        team_weight=3.0,
        priority="batch",
    )
    flow = flow_for(principal, priority="batch")
    assert flow == Flow(team="research", key="7", weight=3.0, priority="batch")


@pytest.mark.parametrize("weight", [0, -1.0])
def test_weight_must_be_positive(weight):
    with pytest.raises(ValueError, match="weight"):
        Flow(weight=weight)
