from django.urls import path
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from completions import apis, openai_apis

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
    path("healthz", apis.HealthApi.as_view(), name="healthz"),
    path("readyz", apis.ReadinessApi.as_view(), name="readyz"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "redoc",
        SpectacularRedocView.as_view(url_name="schema", template_name="completions/redoc.html"),
        name="redoc",
    ),
]
