"""
The ASGI application served by `manage.py serve` (uvicorn).

Layers, outermost first:
* lifespan: loads the embedded model at start-up and closes upstream clients at shutdown
  (Django's own handler does not speak the lifespan protocol);
* body size limit: oversized uploads get 413 while they are read, before they are buffered;
* static files: the docs' JavaScript and CSS, served by the app itself so /docs works offline;
* Django.
"""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
django.setup(set_prefix=False)


class GatewayASGIHandler(ASGIHandler):
    """
    Django's ASGI handler without a `ThreadSensitiveContext` per request.

    That context gives each request its own thread for thread-sensitive sync code, so that
    per-request database connections stay apart. The gateway has no database and its request
    path is async; the one sync call Django still makes per request (`response.close`) then
    runs on the shared sync thread instead of a thread started and joined for every request.
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


django_application = GatewayASGIHandler()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from completions.body_limit import BodySizeLimitMiddleware  # noqa: E402
from completions.lifespan import LifespanMiddleware  # noqa: E402

# Multipart form fields (prompt, parameters) beside the images.
FORM_FIELDS_ALLOWANCE = 1024 * 1024


def body_limit_for_path(path: str) -> tuple[int, str]:
    if path.startswith("/image_model/"):
        limit = settings.LLMAPI_MODELS["image"]["max_image_bytes"] + FORM_FIELDS_ALLOWANCE
        return limit, "IMAGE_MODEL__MAX_IMAGE_BYTES"
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "SERVER__MAX_BODY_BYTES"


application = LifespanMiddleware(
    BodySizeLimitMiddleware(
        ASGIStaticFilesHandler(django_application), limit_for_path=body_limit_for_path
    )
)
