"""
A small URLconf for the accounts and usage tests: the admin, the key login, /v1/me and a
protected view.
"""

from django.contrib import admin
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication, StaffSessionAuthentication


class WhoAmI(APIView):
    authentication_classes = [StaffSessionAuthentication, ApiKeyAuthentication]

    def get(self, request):
        return Response({"kind": request.user.kind, "name": request.user.name})

    def post(self, request):
        return Response({"kind": request.user.kind})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("whoami", WhoAmI.as_view()),
    path("v1/", include("usage.urls")),
    path("", include("accounts.urls")),  # /api-auth/key, /api-auth/logout
]
