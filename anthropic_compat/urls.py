from django.urls import path

from anthropic_compat import apis

urlpatterns = [
    path("messages", apis.MessagesApi.as_view(), name="anthropic-messages"),
    path("messages/count_tokens", apis.CountTokensApi.as_view(), name="anthropic-count-tokens"),
]
