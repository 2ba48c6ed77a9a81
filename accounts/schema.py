"""OpenAPI description of the X-API-Key scheme, so Swagger UI's Authorize button offers it."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "Your API key. Ask the server's operator, or read it from the "
            "server's start-up log when it generated one.",
        }


class BearerOrApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """/v1 takes `Authorization: Bearer <key>` (what the OpenAI SDKs send) or X-API-Key."""

    target_class = "accounts.authentication.BearerOrApiKeyAuthentication"
    name = "BearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Your API key (an X-API-Key header works too).",
        }


class StaffSessionAuthenticationScheme(OpenApiAuthenticationExtension):
    """An admin user's session, for the browsable API."""

    target_class = "accounts.authentication.StaffSessionAuthentication"
    name = "StaffSession"

    def get_security_definition(self, auto_schema):
        from django.conf import settings

        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
