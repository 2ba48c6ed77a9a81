"""The gateway's settings with the observability middleware in the request path (for metrics_ab.py)."""

from llmapi.settings import *  # noqa: F403

MIDDLEWARE = [  # noqa: F405
    "server.middleware.RequestIdMiddleware",
    "observability.middleware.ObservabilityMiddleware",
    *MIDDLEWARE[1:],  # noqa: F405
]
