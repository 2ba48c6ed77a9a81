from django.urls import include, path

from accounts import views

# DRF's browsable API shows "Log in" and the logout menu when these names exist.
browsable_api_login = (
    [
        path("key", views.api_key_login, name="login"),
        path("logout", views.api_key_logout, name="logout"),
    ],
    "rest_framework",
)

urlpatterns = [
    path("api-auth/", include(browsable_api_login)),
]
