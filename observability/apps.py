from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability: metrics, JSON logs, timing headers"

    def ready(self) -> None:
        from django.conf import settings

        from observability import metrics

        # Recording costs nothing when nobody can read the metrics.
        options = settings.METRICS
        metrics.configure(
            enabled=bool(options["token"] or options["port"]),
            key_labels=options["key_labels"],
        )
        # The catalog's names known from the settings; the model catalog adds the rest
        # (e.g. the embedded model's name) with metrics.register_models().
        metrics.register_models(
            spec.get("model_name", "") for spec in getattr(settings, "LLMAPI_MODELS", {}).values()
        )
