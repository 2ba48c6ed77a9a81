"""Build the catalog from the settings: the seed models, then the catalog file's."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from inference.catalog.file import read_catalog_file
from inference.catalog.seed import seed_specs
from inference.catalog.types import Catalog, CatalogError, build_catalog


def load_catalog() -> Catalog:
    """
    The catalog the settings describe. Raises `CatalogError`, naming the line and the field,
    when the catalog file or the seed variables are invalid.
    """
    text, image = seed_specs(
        settings.LLMAPI_MODELS, embedded_enabled=settings.LOCAL_MODEL["enabled"]
    )
    specs = [spec for spec in (text, image) if spec is not None]
    source = "environment"
    path = settings.LLMAPI_MODELS_FILE
    if path:
        file_specs, default_text, default_image = read_catalog_file(Path(path))
        source = str(path)
        by_name = {spec.name: spec for spec in file_specs}
        for role, name in (("text", default_text), ("image", default_image)):
            if name is not None and name not in by_name:
                raise CatalogError(
                    f"{path}: default_{role}_model: '{name}' is not a model of the file."
                )
        # The file's default models, when it names them, replace the seed ones. A seed model
        # with a server stays reachable by its name; the implicit embedded text model (no
        # TEXT_MODEL__BASE_URL) is dropped, so it is not loaded for nothing.
        embedded_in_file = next((spec for spec in file_specs if spec.is_embedded), None)
        if text is not None and text.is_embedded and (default_text or embedded_in_file):
            specs.remove(text)
            text = embedded_in_file
        if default_text is not None:
            text = by_name[default_text]
        if default_image is not None:
            image = by_name[default_image]
        specs += file_specs
    return build_catalog(
        specs, text=text, image=image, source=source, patterns=settings.LLMAPI_MODEL_PATTERNS
    )
