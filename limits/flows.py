"""
Who waits for a model slot, and in what order the waiters get it: fair sharing.

A `Flow` names the team and key a request comes from, the team's weight and the request's
priority class. When a model's slots are contended, a free slot goes to

1. the `interactive` line before the `batch` line, except that after `BATCH_EVERY`
   interactive admissions in a row while batch work waited, the next one goes to batch (so
   batch work always gets at least 1 slot in `BATCH_EVERY + 1` while it waits: never starved);
2. in that line, the team that has had the least of the model recently, relative to its
   weight (start-time fair queuing: each admission advances the team's tag by 1/weight; a team
   that was idle starts at the current virtual time, so idleness earns no credit);
3. in that team, the key that has had the least (the same rule, every key weighing 1);
4. in that key, the oldest request (first come, first served).

Ties go to the oldest request. A slot is never left free while anyone waits, with one
exception, the batch headroom: while interactive work for the model is present, batch work
leaves `headroom` slots free for it (`limits.slots`). Otherwise fairness only chooses *who*
gets a free slot. `FairQueue` is the in-process scheduler; `limits.redis_slots`
runs the same rules in Lua for the shared slots.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

INTERACTIVE = "interactive"
BATCH = "batch"
PRIORITIES = (INTERACTIVE, BATCH)
# After this many interactive admissions in a row while batch work waits, one batch admission.
BATCH_EVERY = 10
# An admission advances its team's tag by UNIT / weight, rounded: integers, so that the Redis
# scripts (whose numbers pass through strings) and this module order waiters exactly alike.
UNIT = 1000


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a request waiting for a slot comes from. The default is an anonymous flow."""

    team: str = ""
    key: str = ""
    weight: float = 1.0
    priority: str = INTERACTIVE
    # Work that may be cut and run again (batch lines): an interactive request may take its
    # slot (`limits.slots` preemption). A client's request never is.
    preemptible: bool = False

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError("weight must be positive")
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")

    @property
    def cost(self) -> int:
        """How far one admission advances the team's tag: UNIT / weight, at least 1."""
        return max(1, round(UNIT / self.weight))


ANONYMOUS = Flow()


def flow_for(principal: Any, *, priority: str = INTERACTIVE, preemptible: bool = False) -> Flow:
    """
    The flow of a request from `principal` (an `accounts.principals.Principal`, or anything
    with its attributes) at `priority` (the caller's, already lowered by the request's header
    if it asked): its team, its key and the team's weight.
    """
    key_id = getattr(principal, "key_id", None)
    return Flow(
        team=getattr(principal, "team_name", "") or "",
        key=str(key_id) if key_id is not None else getattr(principal, "prefix", "") or "",
        weight=float(getattr(principal, "team_weight", 1.0) or 1.0),
        priority=priority if priority in PRIORITIES else INTERACTIVE,
        preemptible=preemptible,
    )


W = TypeVar("W")


@dataclass
class _Line(Generic[W]):
    """The waiters of one priority class: team -> key -> FIFO of (ticket, waiter)."""

    teams: dict[str, dict[str, deque[tuple[int, W]]]] = field(default_factory=dict)
    size: int = 0


class FairQueue(Generic[W]):
    """
    Waiters for the slots of one model in this process, handed out by the rules above.

    `push` adds a waiter (returns a handle for `remove`), `pop` takes the next one. Cost per
    operation: proportional to the number of teams (and keys of the chosen team) waiting.
    """

    def __init__(self, batch_every: int = BATCH_EVERY) -> None:
        self.batch_every = batch_every
        self._lines: dict[str, _Line[W]] = {p: _Line() for p in PRIORITIES}
        self._tickets = itertools.count()
        self._vnow = 0  # virtual time: the start tag of the last admission
        self._finish: dict[str, int] = {}  # team -> finish tag of its last admission
        self._costs: dict[str, int] = {}  # team -> its cost per admission
        self._key_vnow: dict[str, int] = {}
        self._key_finish: dict[tuple[str, str], int] = {}
        self._streak = 0  # interactive admissions in a row while batch work waited

    def __len__(self) -> int:
        return sum(line.size for line in self._lines.values())

    def __bool__(self) -> bool:
        return any(line.size for line in self._lines.values())

    def waiting(self) -> Iterator[tuple[Flow, int]]:
        """(flow, ticket) of every waiter, for counts by team."""
        for priority, line in self._lines.items():
            for team, keys in line.teams.items():
                for key, fifo in keys.items():
                    for _ticket, _ in fifo:
                        yield Flow(team=team, key=key, priority=priority), _ticket

    def push(self, flow: Flow, waiter: W) -> tuple[Flow, int, W]:
        ticket = next(self._tickets)
        line = self._lines[flow.priority]
        line.teams.setdefault(flow.team, {}).setdefault(flow.key, deque()).append((ticket, waiter))
        line.size += 1
        self._costs[flow.team] = flow.cost
        return flow, ticket, waiter

    def remove(self, handle: tuple[Flow, int, W]) -> bool:
        """Take a waiter out of the line (it gave up); False if it is no longer there."""
        flow, ticket, waiter = handle
        line = self._lines[flow.priority]
        keys = line.teams.get(flow.team)
        fifo = keys.get(flow.key) if keys else None
        if not fifo:
            return False
        try:
            fifo.remove((ticket, waiter))
        except ValueError:
            return False
        line.size -= 1
        self._drop_empty(line, flow.team, flow.key)
        return True

    @property
    def interactive_waiting(self) -> int:
        """How many interactive requests wait."""
        return self._lines[INTERACTIVE].size

    def pop(self, *, hold_batch: bool = False) -> W | None:
        """
        The next waiter to admit, or None if nobody waits. With `hold_batch` (the batch
        headroom would be broken), a batch waiter is admitted only by the anti-starvation rule
        (its turn after `batch_every` interactive admissions), never to a slot nobody else
        wants.
        """
        interactive, batch = self._lines[INTERACTIVE], self._lines[BATCH]
        if interactive.size and (not batch.size or self._streak < self.batch_every):
            line = interactive
            self._streak = self._streak + 1 if batch.size else 0
        elif batch.size and not (hold_batch and not interactive.size):
            line = batch
            self._streak = 0
        else:
            return None
        team = self._least_served(line.teams, lambda t: max(self._finish.get(t, 0), self._vnow))
        start = max(self._finish.get(team, 0), self._vnow)
        self._vnow = start
        self._finish[team] = start + self._costs.get(team, UNIT)
        keys = line.teams[team]
        key_vnow = self._key_vnow.get(team, 0)
        key = self._least_served(keys, lambda k: max(self._key_finish.get((team, k), 0), key_vnow))
        key_start = max(self._key_finish.get((team, key), 0), key_vnow)
        self._key_vnow[team] = key_start
        self._key_finish[(team, key)] = key_start + UNIT
        _ticket, waiter = keys[key].popleft()
        line.size -= 1
        self._drop_empty(line, team, key)
        if not self:
            self._forget_idle()
        return waiter

    @staticmethod
    def _least_served(groups: Mapping[str, Any], tag: Callable[[str], int]) -> str:
        """The group with the smallest tag; ties to the one with the oldest waiter."""

        def order(name: str) -> tuple[int, int]:
            heads = groups[name]
            if isinstance(heads, deque):
                oldest = heads[0][0]
            else:
                oldest = min(fifo[0][0] for fifo in heads.values())
            return tag(name), oldest

        return min(groups, key=order)

    def _drop_empty(self, line: _Line[W], team: str, key: str) -> None:
        keys = line.teams[team]
        if not keys[key]:
            del keys[key]
        if not keys:
            del line.teams[team]

    def _forget_idle(self) -> None:
        """
        Nobody waits: tags at or below the virtual time carry no history worth keeping, and the
        rest are counted from zero again (so that tags stay small).
        """
        vnow = self._vnow
        self._finish = {t: f - vnow for t, f in self._finish.items() if f > vnow}
        self._costs = {t: c for t, c in self._costs.items() if t in self._finish}
        self._key_finish = {
            (team, key): f - self._key_vnow.get(team, 0)
            for (team, key), f in self._key_finish.items()
            if team in self._finish and f > self._key_vnow.get(team, 0)
        }
        self._key_vnow = {}
        self._vnow = 0
        self._streak = 0
