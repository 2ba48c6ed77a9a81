from django.urls import path

from responses import apis

urlpatterns = [
    path("responses", apis.ResponsesApi.as_view(), name="responses"),
    path("responses/<str:response_id>", apis.ResponseApi.as_view(), name="response"),
    path(
        "responses/<str:response_id>/input_items",
        apis.ResponseInputItemsApi.as_view(),
        name="response-input-items",
    ),
]
