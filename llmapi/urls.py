"""Which app serves which path. Each app keeps its own routes in its urls.py."""

from django.contrib import admin
from django.urls import include, path

from openai_compat.urls import not_found_patterns

# Under a prefix, a path outside it is passed over at once, instead of being tried (and
# listed for the 404 page) against every pattern inside.
v1_patterns = [
    path("", include("openai_compat.urls")),  # /v1/chat/completions, /v1/models, ...
    path("", include("responses.urls")),  # /v1/responses
    path("", include("anthropic_compat.urls")),  # /v1/messages, /v1/messages/count_tokens
    path("", include("usage.urls")),  # /v1/me
    path("", include("batches.urls")),  # /v1/files, /v1/batches
    path("", include(not_found_patterns)),  # any other /v1 path: OpenAI's 404
]

urlpatterns = [
    path("v1/", include(v1_patterns)),
    path("", include("completions.urls")),  # the seed API: /text_model/*, /image_model/*
    path("", include("health.urls")),  # /healthz, /readyz
    path("", include("observability.urls")),  # /metrics
    path("", include("accounts.urls")),  # the browsable API's key login
    path("admin/", admin.site.urls),  # teams, keys, usage, the audit log
    path("", include("portal.urls")),  # /portal: single sign-on, my keys, my team, usage
    path("", include("playground.urls")),  # /playground, /docs, /redoc
]
