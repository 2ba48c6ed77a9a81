from django.urls import path

from observability.apis import MetricsApi

urlpatterns = [
    path("metrics", MetricsApi.as_view(), name="metrics"),
]
