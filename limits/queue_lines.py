"""
Who waits in the shared lines of the models' slots, by team and priority class, read from
Redis (every worker of every host): for the staff's usage dashboard, next to this server's
own figures from the metrics.

A staff page is rare and may run on any thread or event loop, so it reads with a client of
its own (`limits.redis_transport.redis_py_client`, Sentinel URLs included), closed after the
read, under the short timeouts of the shared limits; it never touches the request path's
connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.exceptions import RedisError

from limits import redis_client
from limits.flows import BATCH, INTERACTIVE
from limits.redis_slots import slot_keys
from limits.redis_transport import redis_py_client

SCAN_LIMIT = 1000  # waiters looked at per line and model (as the scripts' own choice does)
BEYOND = "other"  # the team of the waiters beyond SCAN_LIMIT (as metrics name extra teams)

# KEYS: flows, the interactive line, the batch line. Returns, per line, its length, then
# (team, count) pairs for its SCAN_LIMIT oldest waiters.
_BY_TEAM = f"""
local out = {{}}
for n = 2, 3 do
  local tokens = redis.call('ZRANGE', KEYS[n], 0, {SCAN_LIMIT - 1})
  local counts, order = {{}}, {{}}
  if #tokens > 0 then
    local specs = redis.call('HMGET', KEYS[1], unpack(tokens))
    for _, spec in ipairs(specs) do
      if spec then
        local team = string.match(spec, '^[^\\n]*\\n([^\\n]*)\\n') or ''
        if counts[team] == nil then counts[team] = 0; order[#order + 1] = team end
        counts[team] = counts[team] + 1
      end
    end
  end
  out[#out + 1] = redis.call('ZCARD', KEYS[n])
  out[#out + 1] = #order
  for _, team in ipairs(order) do
    out[#out + 1] = team
    out[#out + 1] = counts[team]
  end
end
return out
"""


async def shared_lines(names: Iterable[str]) -> dict[tuple[str, str, str], int] | None:
    """
    `{(slot set, team, priority): requests waiting}` over every process, for the slot sets
    `names` (a team's name, "" without a team). Beyond the `SCAN_LIMIT` oldest waiters of a
    line, the rest count under the team `BEYOND`. None when Redis cannot be reached (or without
    REDIS_URL).
    """
    cfg = redis_client.config()
    if not cfg.url:
        return None
    client = redis_py_client(
        cfg.url,
        max_connections=1,
        connect_timeout=cfg.connect_timeout,
        timeout=max(cfg.timeout, 1.0),
        retries=0,
    )
    figures: dict[tuple[str, str, str], int] = {}
    try:
        for name in dict.fromkeys(names):
            keys = slot_keys(cfg.key_prefix, name, "flows", "line:i", "line:b")
            reply = await client.eval(_BY_TEAM, len(keys), *keys)
            at = 0
            for priority in (INTERACTIVE, BATCH):
                total, teams = int(reply[at]), int(reply[at + 1])
                at += 2
                counted = 0
                for _ in range(teams):
                    team, count = reply[at].decode(), int(reply[at + 1])
                    at += 2
                    figures[(name, team, priority)] = count
                    counted += count
                if total > counted:
                    key = (name, BEYOND, priority)
                    figures[key] = figures.get(key, 0) + total - counted
    except (RedisError, OSError, TimeoutError):  # the page says "unknown" rather than failing
        return None
    finally:
        await client.aclose()
    return figures
