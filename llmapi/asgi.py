"""
The ASGI application served by `manage.py serve` (uvicorn): Django, set up once, inside the
layers of `server.handler` (lifespan, body size limit, static files).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
django.setup(set_prefix=False)

from server.handler import build_application  # noqa: E402  (needs the apps set up)

application = build_application()
