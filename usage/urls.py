from django.urls import path

from usage.apis import MeApi

urlpatterns = [path("v1/me", MeApi.as_view(), name="me")]
