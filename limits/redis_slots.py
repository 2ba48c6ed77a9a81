"""
Concurrency slots shared by every process and host using one Redis: `RedisSlots` has the
interface of `LocalSlots` (`hold(queue_timeout=...)`, `in_use`, `capacity`).

In Redis, per slot set (all keys share one hash tag, so they live on one cluster node):
- `holders`, a sorted set of lease tokens scored by their expiry (Redis server time, ms). A
  holder renews its lease in the background (every lease/3); a holder that dies (SIGKILL, a
  lost host) stops renewing and its slot frees itself when the lease ends.
- `line:i` and `line:b`, the interactive and batch lines: sorted sets of waiting tokens scored
  by a ticket from INCR (`ticket`), with each token's flow (team, key, weight) in `flows`, and
  the fair-queuing tags of teams and keys in `fair` (the rules: `limits.flows`).
- `batch`, the holders of batch work (a subset of `holders`, same scores), so that the
  interactive holders are the rest: the batch headroom (`limits.slots`) applies while
  interactive work holds or waits for a slot, or ended (`ia` in `fair`, ms) within the window.
- `waiters`, the same waiting tokens scored by a heartbeat expiry: each poll renews it, and a
  waiter that died is dropped from its line when it expires, so it cannot block the line. A
  waiter's place (its ticket and its team's tags) lives in Redis alone, so no other worker's
  restart can lose it.

Every acquire, release, renew and leave is one Lua script, one atomic round trip. Time is the
Redis server's clock (`TIME`), so hosts with skewed clocks agree.

Waiting: when a slot frees (a release, a waiter leaving, an expired lease found), the script
chooses the next waiter by the fair-sharing rules and grants it the slot at once (a short
lease, `WAITER_TTL_MS`), then publishes its token; its process wakes it, and its next call
turns the grant into a full lease. So a slot is never left free while anyone waits (but for the batch headroom: a held-back
batch waiter is granted by its own next poll once the window has passed). A missed
message costs little: waiters also poll, with a backoff from 20 ms to 250 ms, and a grant its
waiter never collects (a dead process) frees itself within `WAITER_TTL_MS`.

Handing on: a request that ends keeps its lease for `WARM_SECONDS`, and the next request of
the same worker takes it without a round trip, while the last look at the slot set (an
admission's reply, or a count taken in the background every `ROOMY_SECONDS` while leases are
handed on; at most twice that long ago) saw at least half the slots free and nobody in line,
and none of the worker's own requests is in line. Otherwise the lease is released at once. A
request that joins the line publishes it (`BUSY_CHANNEL`), and every worker then releases the
leases it kept, so that a waiting request is not passed over.

When Redis cannot be reached, `LIMITS__ON_REDIS_ERROR` decides (see `redis_client`): `open`
admits without counting, `closed` raises `LimitsUnavailable`. A holder whose lease was lost
(Redis restarted empty, or it could not renew for a whole lease) takes it back at its next
renewal if the slot set has room, so counts recover after an outage without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from infra.runtime import get_runtime
from limits import redis_client, redis_events
from limits.flows import ANONYMOUS, BATCH, BATCH_EVERY, UNIT, Flow
from limits.per_loop import PerLoop, running_loop
from limits.redis_client import RedisUnreachable
from limits.slots import HoldTimes, SlotTimeout, retry_estimate

logger = logging.getLogger("limits.slots")

WAKE_CHANNEL = "slots:wake"
BUSY_CHANNEL = "slots:busy"  # a request joined a line: stop handing leases on in that set
POLL_MIN = 0.02  # seconds before a waiter asks again when no wake-up came
POLL_MAX = 0.25
WAITER_TTL_MS = 2000  # a waiter that has not polled for this long is dropped from the line
RENEW_BATCH = 500  # leases renewed per round trip

# Every script gets the same KEYS (holders, waiters, ticket, flows, fair, interactive line,
# batch line, batch holders) and the same first ARGV (capacity, lease ms, waiter ttl ms, key
# ttl ms, wake channel, batch every, batch headroom, its window ms); its own arguments follow
# from ARGV[9].
# - `flows`, a hash: waiting token -> "cost\nteam\nkey" (its flow; cost = UNIT / weight);
# - `fair`, a hash of the fair-queuing tags (integers): `v` the virtual time, `t:<team>` a
#   team's finish tag, `q:<team>` the team's virtual time among its keys, `k:<team>\n<key>` a
#   key's finish tag, `s` the interactive admissions in a row while batch work waited, `ia`
#   when (ms) the last interactive holder released its slot;
# - the two lines, sorted sets of waiting tokens scored by their ticket (first come first).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holders, waiters, ticket, flows, fair = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lines = {i = KEYS[6], b = KEYS[7]}
local batch_holders = KEYS[8]
local capacity, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local waiter_ttl, key_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local wake_channel, batch_every = ARGV[5], tonumber(ARGV[6])
local headroom, headroom_window = tonumber(ARGV[7]), tonumber(ARGV[8])
local UNIT = UNIT_VALUE
local function waiting()
  return redis.call('ZCARD', lines.i) + redis.call('ZCARD', lines.b)
end
local function leave_line(tokens)
  redis.call('ZREM', lines.i, unpack(tokens))
  redis.call('ZREM', lines.b, unpack(tokens))
  redis.call('ZREM', waiters, unpack(tokens))
  redis.call('HDEL', flows, unpack(tokens))
end
local function cleanup()
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', batch_holders, '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', waiters, '-inf', now, 'LIMIT', 0, 100)
  if #dead > 0 then leave_line(dead) end
end
local function num(field)
  return tonumber(redis.call('HGET', fair, field) or '0')
end
-- Whether granting a batch waiter a slot now would break the headroom owed to interactive
-- work (present: holding or waiting for a slot, or ended within the window).
local function holds_back_batch()
  if headroom <= 0 then return false end
  local held = redis.call('ZCARD', holders)
  if capacity - held - 1 >= headroom then return false end
  if held > redis.call('ZCARD', batch_holders) or redis.call('ZCARD', lines.i) > 0 then
    return true
  end
  local ended = redis.call('HGET', fair, 'ia')
  return ended ~= false and now < tonumber(ended) + headroom_window
end
-- The next waiter of a line: the team least served (by weight), its key least served, that
-- key's oldest request (ties: the oldest request). Looks at the 1000 oldest waiters of the
-- line (SCAN_LIMIT).
local function pick(line)
  local tokens = redis.call('ZRANGE', line, 0, 999)
  if #tokens == 0 then return nil end
  local specs = redis.call('HMGET', flows, unpack(tokens))
  local vnow = num('v')
  local parsed, team_tag, best = {}, {}, nil
  for i, token in ipairs(tokens) do
    local spec = specs[i]
    if spec then
      local cost, team, key = string.match(spec, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')
      parsed[i] = {team, key}
      if team_tag[team] == nil then
        local tag = math.max(num('t:' .. team), vnow)
        team_tag[team] = tag
        if best == nil or tag < best.tag then
          best = {team = team, tag = tag, cost = tonumber(cost)}
        end
      end
    else
      leave_line({token})  -- no flow: a leftover, not a waiter
    end
  end
  if best == nil then return nil end
  local team = best.team
  local kvnow = num('q:' .. team)
  local seen, chosen = {}, nil
  for i, token in ipairs(tokens) do
    local p = parsed[i]
    if p and p[1] == team and not seen[p[2]] then
      seen[p[2]] = true
      local tag = math.max(num('k:' .. team .. '\\n' .. p[2]), kvnow)
      if chosen == nil or tag < chosen.tag then chosen = {token = token, key = p[2], tag = tag} end
    end
  end
  redis.call('HSET', fair, 'v', best.tag, 't:' .. team, best.tag + best.cost,
    'q:' .. team, chosen.tag, 'k:' .. team .. '\\n' .. chosen.key, chosen.tag + UNIT)
  return chosen.token
end
-- Nobody waits any more: tags at or below the virtual time carry no history worth keeping,
-- and the rest are counted from zero again (so that tags stay small).
local function forget_idle()
  local all = redis.call('HGETALL', fair)
  local values = {}
  for i = 1, #all, 2 do values[all[i]] = tonumber(all[i + 1]) end
  local vnow = values['v'] or 0
  local kept = {}
  if values['ia'] then
    kept[1], kept[2] = 'ia', values['ia']
  end
  for field, value in pairs(values) do
    local kind = string.sub(field, 1, 2)
    if kind == 't:' and value > vnow then
      kept[#kept + 1] = field
      kept[#kept + 1] = value - vnow
    elseif kind == 'k:' then
      local team = string.match(field, '^k:([^\\n]*)\\n')
      local kvnow = values['q:' .. team] or 0
      if (values['t:' .. team] or 0) > vnow and value > kvnow then
        kept[#kept + 1] = field
        kept[#kept + 1] = value - kvnow
      end
    end
  end
  redis.call('DEL', fair)
  if #kept > 0 then redis.call('HSET', fair, unpack(kept)) end
end
-- Hand every free slot to the next waiter, interactive before batch (but one batch admission
-- after `batch_every` interactive ones in a row while batch work waits), and wake them. A
-- batch waiter is not given a slot the headroom keeps for interactive work (but for the
-- anti-starvation turn).
local function fill()
  local free = capacity - redis.call('ZCARD', holders)
  local granted = {}
  while free > 0 do
    local ni, nb = redis.call('ZCARD', lines.i), redis.call('ZCARD', lines.b)
    if ni + nb == 0 then break end
    local streak, line = num('s'), lines.b
    if ni > 0 and (nb == 0 or streak < batch_every) then
      line = lines.i
      if nb > 0 then streak = streak + 1 else streak = 0 end
    else
      if ni == 0 and holds_back_batch() then break end
      streak = 0
    end
    redis.call('HSET', fair, 's', streak)
    local token = pick(line)
    if token then
      leave_line({token})
      -- Until its waiter comes for it (woken now): a dead waiter's grant frees itself soon.
      redis.call('ZADD', holders, now + waiter_ttl, token)
      if line == lines.b then redis.call('ZADD', batch_holders, now + waiter_ttl, token) end
      granted[#granted + 1] = token
      free = free - 1
    end
  end
  if #granted > 0 then
    redis.call('PUBLISH', wake_channel, table.concat(granted, ' '))
    if waiting() == 0 then forget_idle() end
  end
end
local function keep()
  for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], key_ttl) end
end
-- A holder's lease extended (in `batch` too if it holds for batch work).
local function extend(token)
  redis.call('ZADD', holders, now + lease, token)
  redis.call('ZADD', batch_holders, 'XX', now + lease, token)
end
""".replace("UNIT_VALUE", str(UNIT))

# ARGV from 9: token, may_queue (1/0), busy channel, priority line (i/b), flow.
# Returns {1, slots still free, requests waiting} when admitted (or granted meanwhile),
# {0, other requests waiting, free} when in line (or refused with may_queue=0).
_ACQUIRE = (
    _PRELUDE
    + """
local token, priority = ARGV[9], ARGV[12]
local function admit()
  redis.call('ZADD', holders, now + lease, token)
  if priority == 'b' then redis.call('ZADD', batch_holders, now + lease, token) end
  keep()
end
cleanup()
if redis.call('ZSCORE', holders, token) then
  extend(token)
  keep()
  return {1, capacity - redis.call('ZCARD', holders), waiting()}
end
if not redis.call('ZSCORE', waiters, token) then
  local free, queued = capacity - redis.call('ZCARD', holders), waiting()
  if queued == 0 and free > 0 and (priority == 'i' or not holds_back_batch()) then
    admit()
    return {1, free - 1, 0}
  end
  if ARGV[10] == '0' then
    -- Only batch work held back by the headroom waits: the free slot is this request's.
    if priority == 'i' and free > 0 and redis.call('ZCARD', lines.i) == 0 then
      admit()
      redis.call('HSET', fair, 's', num('s') + 1)
      return {1, free - 1, queued}
    end
    return {0, queued, free}
  end
  redis.call('ZADD', lines[priority], redis.call('INCR', ticket), token)
  redis.call('HSET', flows, token, ARGV[13])
  -- Someone waits: workers keeping leases to hand on give them back now.
  redis.call('PUBLISH', ARGV[11], holders)
end
redis.call('ZADD', waiters, now + waiter_ttl, token)
fill()
keep()
if redis.call('ZSCORE', holders, token) then
  extend(token)
  return {1, capacity - redis.call('ZCARD', holders), waiting()}
end
return {0, waiting() - 1, capacity - redis.call('ZCARD', holders)}
"""
)

# ARGV from 9: token. Frees the token's slot or its place in line (whichever it has), then
# hands the free slots on. An interactive holder's release starts the headroom's window.
_RELEASE = (
    _PRELUDE
    + """
local token = ARGV[9]
local removed = redis.call('ZREM', holders, token)
if removed == 1 and redis.call('ZREM', batch_holders, token) == 0 then
  redis.call('HSET', fair, 'ia', now)
end
removed = removed + redis.call('ZREM', lines.i, token) + redis.call('ZREM', lines.b, token)
leave_line({token})
cleanup()
fill()
return removed
"""
)

# ARGV from 9: tokens... Returns one status per token: 1 renewed, 2 taken back (it had been
# lost), 0 lost. Waiters get the free slots before lost leases are taken back.
_RENEW = (
    _PRELUDE
    + """
cleanup()
fill()
local status = {}
for i = 9, #ARGV do
  if redis.call('ZSCORE', holders, ARGV[i]) then
    extend(ARGV[i])
    status[#status + 1] = 1
  elseif redis.call('ZCARD', holders) < capacity then
    redis.call('ZADD', holders, now + lease, ARGV[i])
    status[#status + 1] = 2
  else
    status[#status + 1] = 0
  end
end
keep()
return status
"""
)

# Returns {holders, waiting} after cleanup.
_COUNT = (
    _PRELUDE
    + """
cleanup()
fill()
return {redis.call('ZCARD', holders), waiting()}
"""
)

# Lease tokens: pid, a random tag (pids repeat across hosts) and a serial number.
_PROCESS_TAG = secrets.token_hex(6)
_serials = itertools.count()


class SlotsState:
    """The runtime's shared slot sets, and its waiters' wake-up events by token (unique)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Event] = {}
        self.instances: weakref.WeakSet[RedisSlots] = weakref.WeakSet()


def _state() -> SlotsState:
    return get_runtime().part(SlotsState)


def slot_keys(prefix: str, name: str, *names: str) -> list[str]:
    """The Redis keys `names` of the slot set `name` (one hash tag: one cluster slot)."""
    tag = f"{{{prefix}:slots:{name}}}"
    return [f"{tag}:{each}" for each in names]


def _flow_spec(flow: Flow) -> str:
    """A flow as the scripts read it: its cost per admission, team and key on three lines."""
    team = flow.team.replace("\n", " ")
    key = flow.key.replace("\n", " ")
    return f"{flow.cost}\n{team}\n{key}"


def _send_now(what: str, source: str, keys: list[str], args: list[Any]) -> None:
    """A script sent with the next pipeline (this loop round), its outcome not awaited."""
    try:
        future = redis_client.run_script(what, source, keys, args)
    except RedisUnreachable:
        return  # the lease or the waiter's heartbeat expires by itself
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _on_wake(payload: bytes) -> None:
    for token in payload.decode().split():
        event = _state().waiting.get(token)
        if event is not None:
            event.set()


redis_events.subscribe(WAKE_CHANNEL, _on_wake)


def _on_busy(payload: bytes) -> None:
    holders = payload.decode()
    for slots in list(_state().instances):
        if slots._keys("holders")[0] == holders:
            slots.stop_handing_on()


def _on_listener_reconnect() -> None:
    for slots in list(_state().instances):
        slots.stop_handing_on()  # a busy message may have been missed meanwhile


redis_events.subscribe(BUSY_CHANNEL, _on_busy, on_reconnect=_on_listener_reconnect)


# Handing a slot on: a request that ends keeps its lease for WARM_SECONDS, and a request that
# starts on the same worker meanwhile takes it over without a round trip, while the model had
# at least half its slots free and nobody waiting at the last look (taken again in the
# background every ROOMY_SECONDS while leases are handed on).
WARM_SECONDS = 0.2
ROOMY_SECONDS = 0.5


@dataclass
class _LoopState:
    held: dict[str, None] = field(default_factory=dict)  # tokens held on this loop, in order
    renewer: asyncio.Task[None] | None = None
    warm: dict[str, float] = field(default_factory=dict)  # leases kept to hand on: until when
    cooling: asyncio.TimerHandle | None = None  # releases the warm leases left unused
    roomy: bool = False  # the last look at the slot set saw room to hand leases on
    looked_at: float = float("-inf")  # loop time of that look
    looking: bool = False  # a look is on its way
    waiting: int = 0  # requests of this loop in the shared line


def release_kept_leases() -> None:
    """Release, on this loop, every lease kept to hand on (shutdown)."""
    for slots in list(_state().instances):
        state = slots._per_loop.peek()
        if state is not None:
            slots._cool(state, everything=True)


class RedisSlots:
    """
    `capacity` slots named `name`, shared through Redis by every process configured with the
    same REDIS_URL and key prefix. Give every instance of one model the same name and capacity.
    """

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self._per_loop: PerLoop[_LoopState] = PerLoop(_LoopState)
        self._key_cache: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self.hold_times = HoldTimes()
        _state().instances.add(self)

    # --- the LocalSlots interface ----------------------------------------------------------

    @property
    def in_use(self) -> int:
        """Slots held right now by this process's event loop (the shared count: `shared_counts`)."""
        try:
            state = self._per_loop.peek()
        except RuntimeError:  # no running loop
            return 0
        return len(state.held) if state else 0

    @contextlib.asynccontextmanager
    async def hold(
        self,
        *,
        queue_timeout: float,
        flow: Flow = ANONYMOUS,
    ) -> AsyncIterator[None]:
        """
        Hold one slot for the block, waiting in the shared line of `flow` at most
        `queue_timeout` seconds.

        Raises `SlotTimeout` when no slot came in time, and `LimitsUnavailable` when Redis is
        unreachable under `LIMITS__ON_REDIS_ERROR=closed`. Under `open` the block runs
        uncounted.
        """
        state = self._state()
        batch = flow.priority == BATCH
        # Batch work neither takes nor keeps leases handed on: Redis counts it apart.
        token = None if batch else self._take_warm(state)
        counted = True
        if token is None:
            token = f"{os.getpid()}-{_PROCESS_TAG}-{next(_serials)}"  # unique on every host
            try:
                await self._acquire(state, token, queue_timeout, flow)
            except RedisUnreachable:
                error = redis_client.unavailable()
                if error is not None:
                    raise error from None
                counted = False  # open: admitted, counted nowhere
        if not counted:
            yield
            return
        state.held[token] = None
        self._ensure_renewer(state)
        started = time.monotonic()
        try:
            yield
        finally:
            self.hold_times.add(time.monotonic() - started)
            state.held.pop(token, None)
            if batch:
                self._release_later(token)
            else:
                self._hand_on(state, token)  # after the answer, off the client's time

    # --- Redis -----------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        return self._per_loop.get()

    def _keys(self, *names: str) -> list[str]:
        prefix = redis_client.config().key_prefix
        cached = self._key_cache.get((prefix, names))
        if cached is None:
            cached = self._key_cache[(prefix, names)] = slot_keys(prefix, self.name, *names)
        return cached

    def _run(self, what: str, source: str, keys: list[str], args: list) -> Awaitable[Any]:
        return redis_client.run_script(what, source, keys, args)

    def _script_head(self) -> tuple[list[str], list[Any]]:
        """The KEYS and first ARGV every slot script takes."""
        cfg = redis_client.config()
        keys = self._keys(
            "holders", "waiters", "ticket", "flows", "fair", "line:i", "line:b", "batch"
        )
        lease_ms = int(cfg.lease_seconds * 1000)
        head = [
            self.capacity,
            lease_ms,
            WAITER_TTL_MS,
            max(lease_ms, WAITER_TTL_MS) * 2,
            redis_client.key(WAKE_CHANNEL),
            BATCH_EVERY,
            # Never on a model with as few slots as the headroom (a single slot).
            cfg.batch_headroom if cfg.batch_headroom < self.capacity else 0,
            int(cfg.batch_headroom_seconds * 1000),
        ]
        return keys, head

    async def _acquire(
        self, state: _LoopState, token: str, queue_timeout: float, flow: Flow
    ) -> None:
        keys, head = self._script_head()
        args = [
            *head,
            token,
            1 if queue_timeout > 0 else 0,
            redis_client.key(BUSY_CHANNEL),
            "b" if flow.priority == BATCH else "i",
            _flow_spec(flow),
        ]
        try:
            reply = await self._run("slot acquire", _ACQUIRE, keys, args)
        except asyncio.CancelledError:
            self._release_later(token)  # the script may have run: give back what it took
            raise
        if reply[0] == 1:
            self._looked(state, reply)
            return
        # Full: no lease is handed on until an admission finds room again.
        state.roomy = False
        if queue_timeout <= 0:
            raise SlotTimeout(self._retry_after(int(reply[1])))
        # In line: wait for a wake-up (or poll), until admitted or out of time.
        redis_events.ensure_listener()
        waiting = _state().waiting
        event = waiting[token] = asyncio.Event()
        deadline = time.monotonic() + queue_timeout
        delay = POLL_MIN
        state.waiting += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SlotTimeout(self._retry_after(int(reply[1])))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, remaining)):
                        await event.wait()
                if event.is_set():
                    # Woken: a wake-up names only tokens just granted a slot. Take it now and
                    # turn the grant's short lease into a full one without waiting for Redis
                    # (the model server's slot stays busy meanwhile, not idle).
                    self._collect_grant(token)
                    return
                delay = min(delay * 2, POLL_MAX)
                reply = await self._run("slot acquire", _ACQUIRE, keys, args)
                if reply[0] == 1:
                    self._looked(state, reply)
                    return
        except BaseException:
            # Gave up (timeout, cancelled, Redis error): leave the line without delaying the
            # caller; if this fails, the waiter's heartbeat expires within WAITER_TTL_MS.
            self._release_later(token)
            raise
        finally:
            waiting.pop(token, None)
            state.waiting -= 1

    def _retry_after(self, waiting: int) -> int | None:
        return retry_estimate(
            waiting=waiting, capacity=self.capacity, mean_hold=self.hold_times.mean
        )

    def stop_handing_on(self) -> None:
        """Someone waits for this slot set: release the leases kept to hand on (this loop)."""
        state = self._per_loop.peek()
        if state is not None:
            state.roomy = False
            self._cool(state, everything=True)

    def _looked(self, state: _LoopState, reply: list[Any]) -> None:
        """An admission's view of the slot set: whether leases may be handed on for a while."""
        self._saw(state, free=int(reply[1]), waiting=int(reply[2]))

    def _saw(self, state: _LoopState, *, free: int, waiting: int) -> None:
        state.roomy = waiting == 0 and free * 2 >= self.capacity and not state.waiting
        state.looked_at = running_loop().time()
        if not state.roomy:
            self._cool(state, everything=True)

    def _may_hand_on(self, state: _LoopState) -> bool:
        """
        Whether leases may be handed on now: the last look (at most 2 x ROOMY_SECONDS ago)
        saw room, and none of this worker's requests waits in line. A look older than
        ROOMY_SECONDS is taken again in the background, without holding anyone up.
        """
        if not state.roomy or state.waiting or not redis_client.healthy():
            return False
        age = running_loop().time() - state.looked_at
        if age >= ROOMY_SECONDS and not state.looking:
            self._look(state)
        return age < 2 * ROOMY_SECONDS

    def _look(self, state: _LoopState) -> None:
        keys, head = self._script_head()
        try:
            future = redis_client.run_script("slot count", _COUNT, keys, head)
        except RedisUnreachable:
            return
        state.looking = True

        def seen(future: asyncio.Future[Any]) -> None:
            state.looking = False
            if future.cancelled() or future.exception() is not None:
                state.roomy = False
                return
            held, waiting = future.result()
            self._saw(state, free=self.capacity - int(held), waiting=int(waiting))

        future.add_done_callback(seen)

    def _take_warm(self, state: _LoopState) -> str | None:
        """A lease a finished request kept, if one may be handed on now."""
        if not state.warm:
            return None
        if not self._may_hand_on(state):
            self._cool(state, everything=True)
            return None
        token, until = state.warm.popitem()  # the most recent
        if running_loop().time() < until:
            if not state.warm and state.cooling is not None:
                state.cooling.cancel()  # nothing left to release: no wake-up for it
                state.cooling = None
            return token
        self._cool(state, everything=True)
        self._release_later(token)
        return None

    def _hand_on(self, state: _LoopState, token: str) -> None:
        """Keep a finished request's lease for the next one on this worker, or release it."""
        if not self._may_hand_on(state):
            self._release_later(token)
            return
        loop = running_loop()
        state.warm[token] = loop.time() + WARM_SECONDS
        if state.cooling is None:
            state.cooling = loop.call_later(WARM_SECONDS, self._cool, state)

    def _cool(self, state: _LoopState, everything: bool = False) -> None:
        """Release the kept leases nobody took in time (or all of them)."""
        if state.cooling is not None:
            state.cooling.cancel()
            state.cooling = None
        now = running_loop().time()
        for token, until in list(state.warm.items()):
            if everything or until <= now:
                del state.warm[token]
                self._release_later(token)
        if state.warm:
            soonest = min(state.warm.values())
            state.cooling = running_loop().call_at(soonest, self._cool, state)

    def _release_later(self, token: str) -> None:
        """Free the token's slot or its place in line; if Redis is unreachable, the lease or
        the waiter's heartbeat expires by itself. While requests wait, at once (the slot goes
        to the next of them); otherwise with the next pipeline."""
        keys, head = self._script_head()
        args = [*head, token]
        state = self._per_loop.peek()
        if state is not None and not state.roomy:
            _send_now("slot release", _RELEASE, keys, args)
        else:
            redis_client.run_script_later("slot release", _RELEASE, keys, args)

    def _collect_grant(self, token: str) -> None:
        """
        Extend a granted slot's short lease to a full one, in the background. A grant that
        expired meanwhile (its waiter woke more than WAITER_TTL_MS late) is taken back if the
        slots have room, else the request runs uncounted: as for any lost lease.
        """
        keys, head = self._script_head()
        _send_now("lease renewal", _RENEW, keys, [*head, token])

    def _ensure_renewer(self, state: _LoopState) -> None:
        if state.renewer is None or state.renewer.done():
            state.renewer = redis_client.spawn(
                self._renew_while_held(state), name=f"slots-renew-{self.name}"
            )

    async def _renew_while_held(self, state: _LoopState) -> None:
        lease = redis_client.config().lease_seconds
        keys, head = self._script_head()
        while (state.held or state.warm) and not redis_client.stopping():
            await asyncio.sleep(lease / 3)
            tokens = [*state.held, *state.warm]
            for start in range(0, len(tokens), RENEW_BATCH):
                batch = tokens[start : start + RENEW_BATCH]
                args = [*head, *batch]
                try:
                    status = await self._run("lease renewal", _RENEW, keys, args)
                except RedisUnreachable:
                    break  # logged by redis_client; the next round tries again
                lost = [t for t, s in zip(batch, status, strict=True) if s == 0]
                for token in lost:
                    state.warm.pop(token, None)  # not to be handed on: it is no longer held
                lost = [t for t in lost if t in state.held]
                if lost:
                    logger.warning(
                        "%d lease(s) of slots %r lost while the slots are full; those requests "
                        "run uncounted until a slot frees",
                        len(lost),
                        self.name,
                    )

    async def shared_counts(self) -> tuple[int, int]:
        """(slots held, requests waiting) over every process, from Redis."""
        keys, head = self._script_head()
        held, waiting = await self._run("slot count", _COUNT, keys, head)
        return int(held), int(waiting)
