from django.urls import path

from batches import apis

urlpatterns = [
    path("files", apis.FilesApi.as_view(), name="openai-files"),
    path("files/<str:file_id>", apis.FileApi.as_view(), name="openai-file"),
    path("files/<str:file_id>/content", apis.FileContentApi.as_view(), name="openai-file-content"),
    path("batches", apis.BatchesApi.as_view(), name="openai-batches"),
    path("batches/<str:batch_id>", apis.BatchApi.as_view(), name="openai-batch"),
    path(
        "batches/<str:batch_id>/cancel", apis.BatchCancelApi.as_view(), name="openai-batch-cancel"
    ),
]
