"""
The ASGI application served by `manage.py serve` (uvicorn).

Layers, outermost first:
* lifespan: loads the embedded model at start-up and closes upstream clients at shutdown
  (Django's own handler does not speak the lifespan protocol);
* static files: the docs' JavaScript and CSS, served by the app itself so /docs works offline;
* Django.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")

django_application = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from completions.lifespan import LifespanMiddleware  # noqa: E402

application = LifespanMiddleware(ASGIStaticFilesHandler(django_application))
