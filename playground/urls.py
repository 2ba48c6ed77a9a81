from django.templatetags.static import static
from django.urls import path
from django.views.decorators.cache import cache_control
from django.views.decorators.vary import vary_on_headers
from django.views.generic import RedirectView, TemplateView
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from playground.views import offline_page, redoc_bundle

FAVICON = static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png")

urlpatterns = [
    path("", RedirectView.as_view(url="/playground"), name="home"),
    path("favicon.ico", RedirectView.as_view(url=FAVICON), name="favicon"),
    path(
        "playground",
        offline_page(TemplateView.as_view(template_name="playground/playground.html")),
        name="playground",
    ),
    # The examples carry the host the schema was asked for: no shared cache may keep a copy.
    path(
        "openapi.json",
        cache_control(private=True, no_cache=True)(
            vary_on_headers("Host")(SpectacularJSONAPIView.as_view())
        ),
        name="schema",
    ),
    path(
        "docs",
        offline_page(SpectacularSwaggerView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("redoc/redoc.standalone.js", redoc_bundle, name="redoc-bundle"),
    path(
        "redoc",
        offline_page(
            SpectacularRedocView.as_view(url_name="schema", template_name="playground/redoc.html")
        ),
        name="redoc",
    ),
]
