from django.urls import path

from health import apis

urlpatterns = [
    path("healthz", apis.HealthApi.as_view(), name="healthz"),
    path("readyz", apis.ReadinessApi.as_view(), name="readyz"),
]
