from __future__ import annotations

from asgiref.sync import async_to_sync
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import BearerOrApiKeyAuthentication, StaffSessionAuthentication
from usage.services import count_request, usage_summary


class MeApi(APIView):
    """The calling key's limits, remaining quota and usage."""

    authentication_classes = [StaffSessionAuthentication, BearerOrApiKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        # A sync view (Django runs it in a thread): the ledger query blocks, the event loop not.
        # Counted against the key's request limits first, like any request (429 past them).
        headers = async_to_sync(count_request)(request.user)
        return Response(async_to_sync(usage_summary)(request.user), headers=headers)
