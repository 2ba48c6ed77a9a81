from django.urls import path

from usage.apis import MeApi

urlpatterns = [path("me", MeApi.as_view(), name="me")]
