from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "Seed API: /text_model and /image_model"
