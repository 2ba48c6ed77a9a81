"""The model catalog: types, the seed variables, the catalog file, and the loader."""

from inference.catalog.types import (
    CAPABILITIES,
    EMBEDDED_MODEL_NAME,
    Catalog,
    CatalogError,
    ModelSpec,
    build_catalog,
)

__all__ = [
    "CAPABILITIES",
    "EMBEDDED_MODEL_NAME",
    "Catalog",
    "CatalogError",
    "ModelSpec",
    "build_catalog",
]
