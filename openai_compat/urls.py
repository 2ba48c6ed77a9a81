from django.urls import path

from openai_compat import apis

urlpatterns = [
    path("v1/models", apis.OpenAIModelsApi.as_view(), name="openai-models"),
    path("v1/models/<path:model>", apis.OpenAIModelApi.as_view(), name="openai-model"),
    path("v1/chat/completions", apis.OpenAIChatCompletionsApi.as_view(), name="openai-chat"),
]
