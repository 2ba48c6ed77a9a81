from django.urls import path, re_path

from openai_compat import apis

urlpatterns = [
    path("models", apis.OpenAIModelsApi.as_view(), name="openai-models"),
    path("models/<path:model>", apis.OpenAIModelApi.as_view(), name="openai-model"),
    path("chat/completions", apis.OpenAIChatCompletionsApi.as_view(), name="openai-chat"),
    path("completions", apis.OpenAICompletionsApi.as_view(), name="openai-completions"),
    path("embeddings", apis.OpenAIEmbeddingsApi.as_view(), name="openai-embeddings"),
]

# Included last under /v1/ by llmapi/urls.py: any other /v1 path (a trailing slash too) is a
# 404 in OpenAI's shape rather than Django's HTML page.
not_found_patterns = [re_path(r"", apis.OpenAINotFoundApi.as_view(), name="openai-404")]
