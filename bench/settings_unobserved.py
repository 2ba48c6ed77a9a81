"""The gateway's settings without the observability middleware (for metrics_ab.py's baseline)."""

from llmapi.settings import *  # noqa: F403

MIDDLEWARE = [  # noqa: F405
    name
    for name in MIDDLEWARE  # noqa: F405
    if name != "observability.middleware.ObservabilityMiddleware"
]
