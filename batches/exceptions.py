"""
The batches' own errors, each rendered by the /v1 exception handler in OpenAI's shape.

    rest_framework.exceptions.APIException
      ├── FileRefused       a file or a field of the request is refused (400, naming the field)
      ├── StorageFull       the key's files would pass BATCHES__MAX_BYTES_PER_KEY (413)
      ├── NotFound          no such file or batch for this key (404, the same for another key's)
      └── ContentMissing    a file's bytes are not in this host's BATCHES__FILES_DIR (503)
"""

from __future__ import annotations

from http import HTTPStatus

from rest_framework import exceptions


class FileRefused(exceptions.ValidationError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})


class StorageFull(exceptions.APIException):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    default_code = "storage_full"


class NotFound(exceptions.NotFound):
    pass


class ContentMissing(exceptions.APIException):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    default_code = "content_missing"
