from django.urls import path

from completions import apis

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
]
