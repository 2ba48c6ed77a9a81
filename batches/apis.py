"""
OpenAI's Files and Batch APIs: `/v1/files` and `/v1/batches`.

A key sees only its own files and batches: another key's id gets the same 404 as one that
does not exist. Database and disk work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from batches import presenters, runner, services, storage
from batches.exceptions import ContentMissing, FileRefused
from batches.owners import owner_of
from completions.apis import FORM_FIELDS_ALLOWANCE, FORM_PARSERS
from infra.database import in_database_thread
from openai_compat.apis import OpenAIApiView

TAGS = ["Batches"]
MAX_PAGE = 100
ERRORS = {
    400: OpenApiResponse(description="A field is refused; `param` names it."),
    401: OpenApiResponse(description="Missing or wrong key."),
    404: OpenApiResponse(description="No such file or batch for this key."),
}
CONTENT_ERRORS = {
    **ERRORS,
    503: OpenApiResponse(description="The file's bytes are missing from this host's folder."),
}
UPLOAD_ERRORS = {
    **ERRORS,
    413: OpenApiResponse(description="The file, or the key's stored files, are too large."),
}


def _owner(request) -> str:
    return owner_of(request.user)


def _limit(request, default: int = 20) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise FileRefused("limit", f"An integer from 1 to {MAX_PAGE}.")
    return int(raw)


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A JSONL file, one request per line.")
    purpose = serializers.CharField(help_text="`batch`.")


class BatchCreateSerializer(serializers.Serializer):
    input_file_id = serializers.CharField(max_length=100)
    endpoint = serializers.CharField(max_length=100)
    completion_window = serializers.CharField(max_length=10)
    metadata = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, allow_null=True
    )


@sync_to_async(thread_sensitive=False)
def _parsed(request, serializer_class):
    """The request's form or JSON, parsed and checked in a thread (an upload may be large)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _create_file(owner, upload, purpose):
    try:
        return services.create_file(
            owner=owner, upload=upload, filename=upload.name or "batch.jsonl", purpose=purpose
        )
    finally:
        upload.close()


_create_file_in_thread = in_database_thread(_create_file)
_get_file = in_database_thread(services.get_file)
_list_files = in_database_thread(services.list_files)
_delete_file = in_database_thread(services.delete_file)
_create_batch = in_database_thread(services.create_batch)
_get_batch = in_database_thread(services.get_batch)
_list_batches = in_database_thread(services.list_batches)
_cancel_batch = in_database_thread(services.cancel_batch)


@in_database_thread
def _batch_objects(batches) -> list[dict]:
    return [presenters.batch_object(b, services.request_counts(b)) for b in batches]


class FilesApi(OpenAIApiView):
    parser_classes = FORM_PARSERS

    @classmethod
    def body_limit(cls) -> tuple[int, str]:
        """The most an upload may send, read by the server before the body is buffered."""
        return settings.BATCHES["max_file_bytes"] + FORM_FIELDS_ALLOWANCE, "BATCHES__MAX_FILE_BYTES"

    @extend_schema(
        tags=TAGS,
        summary="Upload a batch input file (OpenAI format)",
        request={"multipart/form-data": FileUploadSerializer},
        responses={200: OpenApiResponse(description="A file object."), **UPLOAD_ERRORS},
    )
    async def post(self, request):
        data = await _parsed(request, FileUploadSerializer)
        found = await _create_file_in_thread(_owner(request), data["file"], data["purpose"])
        return Response(presenters.file_object(found))

    @extend_schema(
        tags=TAGS,
        summary="List this key's files (OpenAI format)",
        operation_id="v1_files_list",
        responses={200: OpenApiResponse(description="A page of file objects."), **ERRORS},
    )
    async def get(self, request):
        limit = _limit(request, default=MAX_PAGE)
        found = await _list_files(
            owner=_owner(request),
            purpose=request.query_params.get("purpose"),
            limit=limit,
            after=request.query_params.get("after"),
        )
        return Response(presenters.page([presenters.file_object(f) for f in found], limit=limit))


class FileApi(OpenAIApiView):
    @extend_schema(
        tags=TAGS,
        summary="One file (OpenAI format)",
        responses={200: OpenApiResponse(description="A file object."), **ERRORS},
    )
    async def get(self, request, file_id: str):
        found = await _get_file(owner=_owner(request), file_id=file_id)
        return Response(presenters.file_object(found))

    @extend_schema(
        tags=TAGS,
        summary="Delete a file (OpenAI format)",
        responses={200: OpenApiResponse(description="The deleted file's id."), **ERRORS},
    )
    async def delete(self, request, file_id: str):
        deleted = await _delete_file(owner=_owner(request), file_id=file_id)
        return Response({"id": deleted, "object": "file", "deleted": True})


class FileContentApi(OpenAIApiView):
    @extend_schema(
        tags=TAGS,
        summary="A file's content (OpenAI format)",
        responses={
            200: OpenApiResponse(description="The file's bytes (JSONL)."),
            **CONTENT_ERRORS,
        },
    )
    async def get(self, request, file_id: str):
        found = await _get_file(owner=_owner(request), file_id=file_id)
        try:
            source = await sync_to_async(storage.open_file, thread_sensitive=False)(found.id)
        except FileNotFoundError:
            raise ContentMissing(
                "The file's content is not in this server's BATCHES__FILES_DIR; every gateway "
                "host needs the same folder."
            ) from None
        chunks = storage.read_chunks(source)

        read = sync_to_async(next, thread_sensitive=False)

        async def content():
            try:
                while chunk := await read(chunks, b""):
                    yield chunk
            finally:
                await sync_to_async(chunks.close, thread_sensitive=False)()

        response = _streamed(content())
        response["Content-Length"] = str(found.bytes)
        response["Content-Disposition"] = f'attachment; filename="{found.id}.jsonl"'
        return response


def _streamed(content) -> StreamingHttpResponse:
    return StreamingHttpResponse(content, content_type="application/octet-stream")


class BatchesApi(OpenAIApiView):
    @extend_schema(
        tags=TAGS,
        summary="Create a batch (OpenAI format)",
        description="Every line of the input file is checked first: an invalid line is an "
        "entry of the error file, the others run on the models' idle capacity.",
        request=BatchCreateSerializer,
        responses={200: OpenApiResponse(description="A batch object."), **ERRORS},
    )
    async def post(self, request):
        data = await _parsed(request, BatchCreateSerializer)
        batch = await _create_batch(
            owner=_owner(request),
            owner_name=_owner_name(request.user),
            input_file_id=data["input_file_id"],
            endpoint=data["endpoint"],
            completion_window=data["completion_window"],
            metadata=data.get("metadata"),
        )
        runner.wake()
        (shown,) = await _batch_objects([batch])
        return Response(shown)

    @extend_schema(
        tags=TAGS,
        summary="List this key's batches (OpenAI format)",
        operation_id="v1_batches_list",
        responses={200: OpenApiResponse(description="A page of batch objects."), **ERRORS},
    )
    async def get(self, request):
        limit = _limit(request)
        found = await _list_batches(
            owner=_owner(request), limit=limit, after=request.query_params.get("after")
        )
        return Response(presenters.page(await _batch_objects(found), limit=limit))


def _owner_name(principal) -> str:
    team = getattr(principal, "team_name", "")
    return f"{principal.name} ({team})" if team else str(principal.name)


class BatchApi(OpenAIApiView):
    @extend_schema(
        tags=TAGS,
        summary="One batch, with its progress (OpenAI format)",
        responses={200: OpenApiResponse(description="A batch object."), **ERRORS},
    )
    async def get(self, request, batch_id: str):
        batch = await _get_batch(owner=_owner(request), batch_id=batch_id)
        (shown,) = await _batch_objects([batch])
        return Response(shown)


class BatchCancelApi(OpenAIApiView):
    @extend_schema(
        tags=TAGS,
        summary="Cancel a batch (OpenAI format)",
        request=None,
        responses={200: OpenApiResponse(description="The batch, cancelling."), **ERRORS},
    )
    async def post(self, request, batch_id: str):
        batch = await _cancel_batch(owner=_owner(request), batch_id=batch_id)
        runner.wake()
        (shown,) = await _batch_objects([batch])
        return Response(shown)
