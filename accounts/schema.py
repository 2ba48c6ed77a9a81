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
