"""
The Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}` and
`GET /v1/responses/{id}/input_items`, with OpenAI's shapes and errors.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from api.streaming import SSE_MEDIA_TYPE, unbuffered_response
from openai_compat.apis import OPENAI_ERROR_RESPONSES, OpenAIApiView
from openai_compat.serializers import passthrough_body
from responses import services
from responses.serializers import InputItemsQuerySerializer, ResponsesRequestSerializer

NOT_FOUND = {
    401: OpenApiResponse(description="Missing or wrong key."),
    404: OpenApiResponse(description="No such response for this key."),
}


class ResponsesApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="Create a response (OpenAI Responses API)",
        description="The Responses API, on any model: translated to and from chat completions "
        "for chat servers. With `stream: true`, answers with the documented `response.*` "
        "events. See docs/responses.md.",
        request=ResponsesRequestSerializer,
        responses={
            200: OpenApiResponse(description="A response object, or response.* events."),
            **OPENAI_ERROR_RESPONSES,
        },
    )
    async def post(self, request):
        body = passthrough_body(request.data)
        serializer = ResponsesRequestSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        data = {**body, **serializer.validated_data}
        answer = await services.create_response(request, data=data, sent=body)
        if isinstance(answer, services.ResponseStream):
            response = unbuffered_response(answer.frames, content_type=SSE_MEDIA_TYPE)
            for header, value in answer.headers.items():
                response[header] = value
            return response
        return Response(answer.body, headers=answer.headers)


class ResponseApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="A stored response",
        responses={200: OpenApiResponse(description="The response object."), **NOT_FOUND},
    )
    async def get(self, request, response_id: str):
        return Response(await services.retrieve_response(request.user, response_id))

    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="Delete a stored response",
        responses={200: OpenApiResponse(description="Deleted."), **NOT_FOUND},
    )
    async def delete(self, request, response_id: str):
        return Response(await services.delete_response(request.user, response_id))


class ResponseInputItemsApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="The input items of a stored response",
        parameters=[InputItemsQuerySerializer],
        responses={
            200: OpenApiResponse(description="A list of items."),
            400: OpenApiResponse(description="Invalid query parameters."),
            **NOT_FOUND,
        },
    )
    async def get(self, request, response_id: str):
        query = InputItemsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = await services.list_input_items(
            request.user,
            response_id,
            limit=query.validated_data["limit"],
            order=query.validated_data["order"],
            after=query.validated_data.get("after"),
        )
        return Response(page)
