from django.apps import AppConfig


class AnthropicCompatConfig(AppConfig):
    name = "anthropic_compat"
