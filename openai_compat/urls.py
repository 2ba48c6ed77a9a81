from django.urls import path, re_path

from openai_compat import apis

urlpatterns = [
    path("v1/models", apis.OpenAIModelsApi.as_view(), name="openai-models"),
    path("v1/models/<path:model>", apis.OpenAIModelApi.as_view(), name="openai-model"),
    path("v1/chat/completions", apis.OpenAIChatCompletionsApi.as_view(), name="openai-chat"),
    path("v1/completions", apis.OpenAICompletionsApi.as_view(), name="openai-completions"),
    path("v1/embeddings", apis.OpenAIEmbeddingsApi.as_view(), name="openai-embeddings"),
]

# Included last by llmapi/urls.py: any other /v1 path (a trailing slash too) is a 404 in
# OpenAI's shape rather than Django's HTML page.
not_found_patterns = [re_path(r"^v1/", apis.OpenAINotFoundApi.as_view(), name="openai-404")]
