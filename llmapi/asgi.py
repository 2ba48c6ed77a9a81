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

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")

django_application = get_asgi_application()

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
