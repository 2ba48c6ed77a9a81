"""The introduction shown at the top of /docs and /redoc, written for people new to LLMs."""

from __future__ import annotations

from typing import Any

# The server's address as the texts are written. When the schema is served, the hook below puts
# the address the reader actually used in its place, so a copied curl works as it is.
API_ORIGIN = "http://localhost:1999"

API_GUIDE = f"""
llmapi gives you one simple, secured HTTP API in front of language models.

## New to LLMs? Start here

* An **LLM** (large language model) reads text and writes text: ask it a question, it answers.
* A **VLM** (vision-language model) also looks at pictures: send a photo and a question about it.
* Models read and write **tokens**, pieces of words (roughly 3/4 of an English word each).
  Limits such as `max_tokens` count tokens, not characters.
* A **conversation** is a list of `messages`. Each has a `role`: `system` (standing instructions,
  optional), `user` (you) or `assistant` (the model's earlier answers). Send the whole history every
  time: the model remembers nothing between requests.

Prefer a chat window to a form? Open [/playground](/playground). Already use an OpenAI client
library? Point its `base_url` at `/v1` (see the *OpenAI-compatible* section below).

## Your first call

1. Click **Authorize** and paste your API key (the `X-API-Key` header).
2. Open `POST /text_model/chat/completion`, click **Try it out**, then **Execute**.

```bash
curl -X POST {API_ORIGIN}/text_model/chat/completion \\
  -H "Content-Type: application/json" -H "X-API-Key: $API_KEY" \\
  -d '{{"messages": [{{"role": "user", "content": "What is the capital of France?"}}]}}'
```

## The knobs, in plain words

| Parameter | Range (default) | What it does | When to change it |
|---|---|---|---|
| `temperature` | 0–2 (0) | Randomness. 0 picks the likeliest word every time. | Raise to 0.7–1.5 for creative writing; keep 0 for facts. |
| `max_tokens` | > 0 (2048) | The longest answer allowed, in tokens. | Lower it for short answers and faster replies. |
| `top_p` | 0–1 (1) | Only sample from the most likely words whose chances add up to `top_p`. | Change this *or* temperature, rarely both. |
| `frequency_penalty` | −2–2 (0) | Penalises words already used often. | 0.3–1 reduces repetition. |
| `presence_penalty` | −2–2 (0) | Penalises any word already used. | 0.3–1 nudges the model to new topics. |
| `seed` | integer (0) | Fixes the random choices. | Same seed + same input = the same answer, on servers that support it. |
| `response_format` | `text` | `text`, `json_object` or `json_schema`. | Ask for JSON when a program reads the answer. |

Defaults come from the server's configuration and may differ from the ones above.

## Streaming

The `/chat/stream` endpoints send the answer while it is being written, so users see words appear
at once instead of waiting for the whole reply. By default you get plain text (`curl -N` prints it
as it arrives). Send `Accept: text/event-stream` to get Server-Sent Events: `data: {{"delta": "..."}}`
lines, a last event with `finish_reason` and `usage`, then `data: [DONE]`.

## Structured output

`{{"type": "json_object"}}` asks for any JSON object. `{{"type": "json_schema", "json_schema":
{{"name": ..., "schema": {{...}}}}}}` asks for JSON with exactly the fields of your JSON Schema,
which is what you want when a program, not a person, reads the answer.

## Errors and what to do

| Status | Meaning | What to do |
|---|---|---|
| 400 | A field is missing or out of range; `detail` names it. | Fix the request. |
| 401 | No `X-API-Key` header. | Add the header. |
| 403 | The key is wrong. | Check the key with whoever runs the server. |
| 413 | The body or image is too large. | Send less. |
| 415 | The uploaded file is not a supported image type. | Use JPEG, PNG, WebP or GIF. |
| 429 | The model is busy (or the model server is rate-limiting). | Wait `Retry-After` seconds and retry. |
| 502 | The model server failed or returned something unusable. | Retry later; tell the operator if it persists. |
| 503 | The model is not configured on this server. | The operator must set the variable named in `detail`. |
| 504 | The model server took too long. | Ask for fewer tokens or retry later. |

Every error body is `{{"detail": "..."}}`, and every response carries an `X-Request-ID` header
to quote when you report a problem.
"""


def use_request_origin(result: dict, generator, request, public: bool) -> dict:
    """
    drf-spectacular postprocessing hook: write the origin the schema was requested from (its
    scheme, host and port) wherever a description shows `API_ORIGIN`, when that host is one
    ALLOWED_HOSTS names. With `ALLOWED_HOSTS=*` the Host header is whatever a client sent
    (and a shared cache could hand the result to others), so the examples keep `API_ORIGIN`.
    The scheme is https only when a trusted proxy says so (SECURE_PROXY_SSL_HEADER).
    """
    if request is None:  # `manage.py spectacular` writes the schema without a request
        return result
    from django.conf import settings  # this module is read while the settings load

    if "*" in settings.ALLOWED_HOSTS:
        return result
    origin = request.build_absolute_uri("/").rstrip("/")
    if origin != API_ORIGIN:
        _replace_in_descriptions(result, origin)
    return result


def _replace_in_descriptions(node: Any, origin: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = value.replace(API_ORIGIN, origin)
            else:
                _replace_in_descriptions(value, origin)
    elif isinstance(node, list):
        for item in node:
            _replace_in_descriptions(item, origin)
