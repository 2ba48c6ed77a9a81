"""Key revocations reaching every process through Redis pub/sub."""

from __future__ import annotations

import asyncio

import pytest

from limits import redis_client, redis_events, revocations
from limits.exceptions import LimitsUnavailable
from tests.limits.conftest import TRANSPORTS
from tests.waiting import eventually


@pytest.fixture
def received():
    seen: list[str] = []
    revocations.on_revocation(seen.append)
    yield seen
    revocations.remove_callback(seen.append)


@pytest.fixture(params=list(TRANSPORTS))
def shared_url(request) -> str:
    """REDIS_URL of the shared limits, through each transport."""
    request.getfixturevalue(TRANSPORTS[request.param])
    return request.getfixturevalue("settings").SHARED_LIMITS["url"]


def test_revocation_reaches_a_second_process(shared_url, workers):
    other = workers(shared_url, "listen")
    assert other.message(timeout=60)["listening"] is True

    async def publish() -> int:
        try:
            return await revocations.publish_revocation("key-1234")
        finally:
            await redis_client.close()

    listeners = asyncio.run(publish())
    assert listeners >= 1
    assert other.message(timeout=60)["revoked"] == "key-1234"


async def test_this_process_hears_its_own_revocations(shared_url, received):
    assert await redis_events.wait_connected(30)
    await revocations.publish_revocation("sk-abc")
    await eventually(lambda: received)
    assert received == ["sk-abc"]


async def test_after_a_reconnect_subscribers_are_told_to_drop_everything(use_own_redis, received):
    assert await redis_events.wait_connected(30)
    use_own_redis.kill()
    await eventually(lambda: not redis_client.healthy())  # the listener saw it go
    use_own_redis.start()
    await eventually(lambda: received)
    assert received == [revocations.EVERYTHING]


async def test_without_redis_only_this_process_is_told(received):
    assert await revocations.publish_revocation("sk-local") == 1
    assert received == ["sk-local"]


async def test_publishing_while_redis_is_down_refuses_but_revokes_here(use_own_redis, received):
    use_own_redis.kill()
    with pytest.raises(LimitsUnavailable, match="could not be told"):
        await revocations.publish_revocation("sk-down")
    assert received == ["sk-down"]


async def test_a_failing_callback_does_not_stop_the_others(received):
    def broken(revoked: str) -> None:
        raise RuntimeError("cache is broken")

    revocations.on_revocation(broken)
    try:
        # The broken callback is registered after `received`; put it first to prove the point.
        revocations.remove_callback(received.append)
        revocations.on_revocation(received.append)
        await revocations.publish_revocation("sk-x")
    finally:
        revocations.remove_callback(broken)
    assert received == ["sk-x"]


async def test_everything_and_empty_are_not_revocations():
    with pytest.raises(ValueError, match="revoked"):
        await revocations.publish_revocation("")
    with pytest.raises(ValueError, match="revoked"):
        await revocations.publish_revocation(revocations.EVERYTHING)
