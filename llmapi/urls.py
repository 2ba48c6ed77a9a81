from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView, TemplateView
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from completions import apis, openai_apis
from observability.apis import MetricsApi

FAVICON = static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png")

# DRF's browsable API shows "Log in" and the logout menu when these names exist.
browsable_api_login = (
    [
        path("key", apis.api_key_login, name="login"),
        path("logout", apis.api_key_logout, name="logout"),
    ],
    "rest_framework",
)

urlpatterns = [
    path(
        "text_model/chat/completion", apis.TextChatCompletionApi.as_view(), name="text-completion"
    ),
    path("text_model/chat/stream", apis.TextChatStreamApi.as_view(), name="text-stream"),
    path(
        "image_model/chat/completion",
        apis.ImageChatCompletionApi.as_view(),
        name="image-completion",
    ),
    path("image_model/chat/stream", apis.ImageChatStreamApi.as_view(), name="image-stream"),
    path("v1/models", openai_apis.OpenAIModelsApi.as_view(), name="openai-models"),
    path("v1/chat/completions", openai_apis.OpenAIChatCompletionsApi.as_view(), name="openai-chat"),
    path("", RedirectView.as_view(url="/playground"), name="home"),
    path("favicon.ico", RedirectView.as_view(url=FAVICON), name="favicon"),
    path(
        "playground",
        apis.offline_page(TemplateView.as_view(template_name="completions/playground.html")),
        name="playground",
    ),
    path("api-auth/", include(browsable_api_login)),
    path("healthz", apis.HealthApi.as_view(), name="healthz"),
    path("readyz", apis.ReadinessApi.as_view(), name="readyz"),
    path("metrics", MetricsApi.as_view(), name="metrics"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path(
        "docs",
        apis.offline_page(SpectacularSwaggerView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("redoc/redoc.standalone.js", apis.redoc_bundle, name="redoc-bundle"),
    path(
        "redoc",
        apis.offline_page(
            SpectacularRedocView.as_view(url_name="schema", template_name="completions/redoc.html")
        ),
        name="redoc",
    ),
]
