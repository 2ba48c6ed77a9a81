"""The real redis-server fixtures of the shared limits, for routing's shared placements."""

from tests.limits.conftest import (  # noqa: F401
    own_redis_server,
    redis_server,
    use_own_redis,
    use_redis,
)
