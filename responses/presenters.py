"""
The Responses API shapes: the `response` object, its output items, and its stream events.

`ResponseBuilder` follows one response from `response.created` to its end: `events_for` turns
each `translation.chat_events` event into the Responses stream events it means (each with its
`sequence_number`), while the builder keeps the output items for the final `response`
object (whole answers, `response.completed`, and what is stored).

    chat event              Responses stream events
    TextStarted             output_item.added (message), content_part.added (output_text)
    TextDelta               output_text.delta
    TextDone                output_text.done, content_part.done, output_item.done
    RefusalStarted/...      the same with a `refusal` part and refusal.delta/.done
    ReasoningStarted        output_item.added (reasoning)
    ReasoningDelta          reasoning_text.delta
    ReasoningDone           reasoning_text.done, output_item.done (content: reasoning_text)
    ToolCallStarted         output_item.added (function_call)
    ToolArgumentsDelta      function_call_arguments.delta
    ToolCallDone            function_call_arguments.done, output_item.done
    Finished                response.completed, or response.incomplete (length, content filter)
    (a failure mid-stream)  response.failed
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from responses.chat_request import new_id
from translation import chat_events as ev

# The request fields a `response` object echoes, with their defaults when not sent.
ECHOED_FIELDS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": None,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_usage(usage: ev.Usage | None) -> dict[str, Any]:
    """A chat usage as the Responses API's (every count present: clients require them)."""
    usage = usage or ev.Usage()
    input_tokens = usage.input_tokens or 0
    output_tokens = usage.output_tokens or 0
    total = usage.total_tokens if usage.total_tokens is not None else input_tokens + output_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens or 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": total,
    }


def chat_usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """A Responses usage back in chat terms (for the ledger)."""
    if not usage:
        return None
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponseBuilder:
    """One response's state, its stream events and its final object (module docstring)."""

    def __init__(
        self,
        *,
        request: dict[str, Any],
        model: str,
        namespaced: dict[str, tuple[str, str]] | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self.id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.model = model
        self.request = request
        self.namespaced = namespaced or {}
        self.output: list[dict[str, Any]] = []
        self.status = "in_progress"
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self._sequence = 0

    # --- the response object ------------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        echoed = {
            name: self.request.get(name, default) if self.request.get(name) is not None else default
            for name, default in ECHOED_FIELDS.items()
        }
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "model": self.model,
            "output": [_copy(item) for item in self.output],
            **echoed,
            "usage": self.usage,
        }

    # --- events -------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def events_for(self, event: ev.ChatEvent) -> list[dict[str, Any]]:
        """The stream events for one chat event, the output updated to match."""
        item: dict[str, Any]
        match event:
            case ev.TextStarted(index) | ev.RefusalStarted(index):
                part_type = "output_text" if isinstance(event, ev.TextStarted) else "refusal"
                item = {
                    "id": new_id("msg"),
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                }
                self.output.append(item)
                part = _empty_part(part_type)
                added = self._event(
                    "response.output_item.added", output_index=index, item=_copy(item)
                )
                item["content"].append(part)
                return [
                    added,
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=dict(part),
                    ),
                ]
            case ev.TextDelta(index, text):
                item = self.output[index]
                item["content"][0]["text"] += text
                return [
                    self._event(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                ]
            case ev.RefusalDelta(index, text):
                item = self.output[index]
                item["content"][0]["refusal"] += text
                return [
                    self._event(
                        "response.refusal.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=text,
                    )
                ]
            case ev.TextDone(index, text) | ev.RefusalDone(index, text):
                item = self.output[index]
                part = item["content"][0]
                item["status"] = "completed"
                if isinstance(event, ev.TextDone):
                    part["text"] = text
                    done = self._event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                else:
                    part["refusal"] = text
                    done = self._event(
                        "response.refusal.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        refusal=text,
                    )
                return [
                    done,
                    self._event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=dict(part),
                    ),
                    self._event("response.output_item.done", output_index=index, item=_copy(item)),
                ]
            case ev.ReasoningStarted(index):
                item = {
                    "id": new_id("rs"),
                    "type": "reasoning",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": ""}],
                    "status": "in_progress",
                }
                self.output.append(item)
                added = {**_copy(item), "content": []}
                return [self._event("response.output_item.added", output_index=index, item=added)]
            case ev.ReasoningDelta(index, text):
                item = self.output[index]
                item["content"][0]["text"] += text
                return [
                    self._event(
                        "response.reasoning_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=text,
                    )
                ]
            case ev.ReasoningDone(index, text):
                item = self.output[index]
                item["content"][0]["text"] = text
                item["status"] = "completed"
                return [
                    self._event(
                        "response.reasoning_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                    ),
                    self._event("response.output_item.done", output_index=index, item=_copy(item)),
                ]
            case ev.ToolCallStarted(index, call_id, name):
                item = {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": call_id,
                    **self._function_name(name),
                }
                self.output.append(item)
                return [
                    self._event("response.output_item.added", output_index=index, item=_copy(item))
                ]
            case ev.ToolArgumentsDelta(index, _, fragment):
                item = self.output[index]
                item["arguments"] += fragment
                return [
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=fragment,
                    )
                ]
            case ev.ToolCallDone(index, _, _, arguments):
                item = self.output[index]
                item["arguments"] = arguments
                item["status"] = "completed"
                return [
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=arguments,
                    ),
                    self._event("response.output_item.done", output_index=index, item=_copy(item)),
                ]
            case ev.Finished():
                self.finish(event)
                kind = "response.completed" if self.status == "completed" else "response.incomplete"
                return [self._event(kind, response=self.response())]
        return []

    def _function_name(self, chat_name: str) -> dict[str, str]:
        pair = self.namespaced.get(chat_name)
        if pair is None:
            return {"name": chat_name}
        return {"namespace": pair[0], "name": pair[1]}

    def finish(self, event: ev.Finished) -> None:
        self.usage = response_usage(event.usage)
        self.completed_at = int(time.time())
        reason = INCOMPLETE_REASONS.get(event.finish_reason or "")
        if reason is None:
            self.status = "completed"
        else:
            self.status = "incomplete"
            self.incomplete_details = {"reason": reason}

    def fail(self, message: str, *, code: str = "server_error") -> list[dict[str, Any]]:
        """The end of a stream the model server broke: open items are incomplete."""
        self.status = "failed"
        self.error = {"code": code, "message": message}
        for item in self.output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        return [self._event("response.failed", response=self.response())]

    def apply_all(self, events: list[ev.ChatEvent]) -> None:
        """Build the whole response from a whole answer's events (no stream)."""
        for event in events:
            self.events_for(event)


def _empty_part(part_type: str) -> dict[str, Any]:
    if part_type == "refusal":
        return {"type": "refusal", "refusal": ""}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if isinstance(item.get("content"), list):
        copied["content"] = [dict(part) for part in item["content"]]
    return copied
