"""
Chat-completion answers as an ordered sequence of semantic events.

Both the Responses API (`/v1/responses`) and the Messages API (`/v1/messages`) are served on
chat-completions servers by translating the server's answer. This module does the half both
share: it reads OpenAI `chat.completion.chunk`s (or one whole `chat.completion`) and says what
happened, in order, as small frozen dataclasses. It knows nothing of HTTP, DRF or either target
API; each API's presenter turns these events into its own wire shape.

Interface::

    from translation.chat_events import ChatEventTranslator, events_from_completion

    translator = ChatEventTranslator()
    for chunk in chunks:                  # each a decoded `chat.completion.chunk` (a dict)
        for event in translator.feed(chunk):
            ...                           # emit it now: nothing is held back
    for event in translator.finish():     # the upstream stream ended normally
        ...                               # closes open parts, then one `Finished`

    events = events_from_completion(answer)   # a whole `chat.completion` (a dict): same events

Events (every one but `Finished` has `index`, the part's position in the output, 0, 1, 2...
in the order parts started; at most one part is open at a time, so a part's events are never
interleaved with another's, and a part's `...Done` comes before the next part's `...Started`):

    TextStarted(index)                    TextDelta(index, text)            TextDone(index, text)
    ReasoningStarted(index)               ReasoningDelta(index, text)       ReasoningDone(index, text)
    RefusalStarted(index)                 RefusalDelta(index, text)         RefusalDone(index, text)
    ToolCallStarted(index, call_id, name)
    ToolArgumentsDelta(index, call_id, fragment)
    ToolCallDone(index, call_id, name, arguments)
    Finished(finish_reason, usage, model, tool_calls)

- `...Done.text` and `ToolCallDone.arguments` are the whole part: exactly the concatenation of
  its deltas (the Responses API repeats it in `.done` events; the Messages API can ignore it).
- Reasoning text is read from `delta.reasoning_content` (vLLM, llama.cpp, DeepSeek) or, when
  that is absent, `delta.reasoning` (newer vLLM, Ollama, OpenRouter); a server sending both
  in one delta is read once.
- Tool calls are keyed by the server's `tool_calls[].index` (parallel calls), or by `id` when
  a server leaves the index out. A call starts at its first fragment that names it;
  `call_id` is the server's id when that fragment has one, otherwise a generated `call_...`
  id, kept for the whole call even if the server sends its id later (the gateway sends the
  same id back to the server in the next turn, so the pairing holds). Argument fragments are
  emitted as they arrive, unchanged, whatever the chunking: the only bytes ever held are
  arguments that arrive before the call's name (no server does this; they are released when
  the name comes, or at the end with an empty name).
- Parts close (their `...Done` is emitted) when another part starts, when the server sends
  its `finish_reason`, or at `finish()`. A server that goes back to a tool call it had left
  (interleaving two calls' arguments) raises `InterleavedToolCall` rather than reorder bytes.
- Only choice 0 is translated (the gateway asks for one choice).
- `Finished.finish_reason` is the server's own (`stop`, `length`, `tool_calls`,
  `content_filter`, ...) or None when the stream ended without one; `tool_calls` counts the
  calls made, since some servers say `stop` after calling tools. `usage` is a `Usage` or None.
- A chunk that is not a chat chunk raises `MalformedChunk`; a chunk carrying an `error` object
  (how vLLM and llama.cpp report a failure mid-stream) raises `UpstreamStreamError`. Both
  derive from `TranslationError`. After an exception the translator must not be fed again.

Nothing here blocks or does I/O; `feed` costs time linear in the chunk's size.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from translation.exceptions import InterleavedToolCall, MalformedChunk, UpstreamStreamError

# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextStarted:
    index: int


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True)
class TextDone:
    index: int
    text: str


@dataclass(frozen=True)
class ReasoningStarted:
    index: int


@dataclass(frozen=True)
class ReasoningDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ReasoningDone:
    index: int
    text: str


@dataclass(frozen=True)
class RefusalStarted:
    index: int


@dataclass(frozen=True)
class RefusalDelta:
    index: int
    text: str


@dataclass(frozen=True)
class RefusalDone:
    index: int
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class ToolArgumentsDelta:
    index: int
    call_id: str
    fragment: str


@dataclass(frozen=True)
class ToolCallDone:
    index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    """Token counts, in the chat API's terms (`input_tokens` includes `cached_tokens`)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # prompt_tokens_details.cached_tokens
    reasoning_tokens: int | None = None  # completion_tokens_details.reasoning_tokens


@dataclass(frozen=True)
class Finished:
    finish_reason: str | None
    usage: Usage | None
    model: str | None
    tool_calls: int = 0


ChatEvent = (
    TextStarted
    | TextDelta
    | TextDone
    | ReasoningStarted
    | ReasoningDelta
    | ReasoningDone
    | RefusalStarted
    | RefusalDelta
    | RefusalDone
    | ToolCallStarted
    | ToolArgumentsDelta
    | ToolCallDone
    | Finished
)

_STARTED: dict[str, Callable[[int], ChatEvent]] = {
    "text": TextStarted,
    "reasoning": ReasoningStarted,
    "refusal": RefusalStarted,
}
_DELTA: dict[str, Callable[[int, str], ChatEvent]] = {
    "text": TextDelta,
    "reasoning": ReasoningDelta,
    "refusal": RefusalDelta,
}
_DONE: dict[str, Callable[[int, str], ChatEvent]] = {
    "text": TextDone,
    "reasoning": ReasoningDone,
    "refusal": RefusalDone,
}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# --- usage ------------------------------------------------------------------------------------


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_from_chat(raw: Any) -> Usage | None:
    """A chat `usage` object as `Usage`; None when there is none or it has no counts."""
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    usage = Usage(
        input_tokens=_count(raw.get("prompt_tokens")),
        output_tokens=_count(raw.get("completion_tokens")),
        total_tokens=_count(raw.get("total_tokens")),
        cached_tokens=(
            _count(prompt_details.get("cached_tokens"))
            if isinstance(prompt_details, dict)
            else None
        ),
        reasoning_tokens=(
            _count(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, dict)
            else None
        ),
    )
    return usage if usage != Usage() else None


# --- the translator ---------------------------------------------------------------------------


@dataclass
class _ToolCall:
    index: int  # output position, once started
    call_id: str
    name: str
    arguments: list[str]


class ChatEventTranslator:
    """Chunks in, events out, in order; see the module docstring."""

    def __init__(self, *, make_call_id: Callable[[], str] = new_call_id) -> None:
        self._make_call_id = make_call_id
        self._next_index = 0
        self._open_kind: str | None = None  # "text", "reasoning", "refusal", "tool"
        self._open_text: list[str] = []
        self._open_call: _ToolCall | None = None
        self._calls: dict[Any, _ToolCall] = {}  # by the server's key (index or id)
        self._closed_keys: set[Any] = set()
        self._unnamed: dict[Any, list[str]] = {}  # arguments before a name (held)
        self._unnamed_ids: dict[Any, str] = {}
        self._calls_made = 0
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._model: str | None = None
        self._finished = False

    # public -----------------------------------------------------------------------------------

    def feed(self, chunk: Any) -> list[ChatEvent]:
        """The events one `chat.completion.chunk` makes, in order."""
        if not isinstance(chunk, dict):
            raise MalformedChunk("The model server sent a chunk that is not a JSON object.")
        if chunk.get("error") is not None:
            raise UpstreamStreamError(_error_message(chunk["error"]))
        out: list[ChatEvent] = []
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self._model = model
        usage = usage_from_chat(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        if choices is None:
            return out
        if not isinstance(choices, list):
            raise MalformedChunk("The model server sent a chunk whose `choices` is not a list.")
        for choice in choices:
            if not isinstance(choice, dict):
                raise MalformedChunk("The model server sent a chunk with a malformed choice.")
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta is None:
                delta = {}
            if not isinstance(delta, dict):
                raise MalformedChunk(
                    "The model server sent a chunk whose `delta` is not an object."
                )
            self._delta(delta, out)
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                self._finish_reason = finish_reason
                self._close(out)
        return out

    def finish(self) -> list[ChatEvent]:
        """The end of a stream that ended normally: open parts close, then `Finished`."""
        out: list[ChatEvent] = []
        if self._finished:
            return out
        self._finished = True
        for key in list(self._unnamed):
            self._start_call(key, "", self._unnamed_ids.get(key), out)
        self._close(out)
        out.append(
            Finished(
                finish_reason=self._finish_reason,
                usage=self._usage,
                model=self._model,
                tool_calls=self._calls_made,
            )
        )
        return out

    @property
    def open_index(self) -> int | None:
        """The output position of the part now open, if any (for a failure mid-stream)."""
        if self._open_kind is None:
            return None
        return self._next_index - 1

    # deltas -----------------------------------------------------------------------------------

    def _delta(self, delta: dict[str, Any], out: list[ChatEvent]) -> None:
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str):
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._text("reasoning", reasoning, out)
        content = _content_text(delta.get("content"))
        if content:
            self._text("text", content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._text("refusal", refusal, out)
        tool_calls = delta.get("tool_calls")
        if tool_calls is None:
            return
        if not isinstance(tool_calls, list):
            raise MalformedChunk("The model server sent `tool_calls` that is not a list.")
        for position, part in enumerate(tool_calls):
            if not isinstance(part, dict):
                raise MalformedChunk("The model server sent a malformed tool call.")
            self._tool_fragment(part, position, out)

    def _text(self, kind: str, text: str, out: list[ChatEvent]) -> None:
        if self._open_kind != kind:
            self._close(out)
            self._open_kind = kind
            out.append(_STARTED[kind](self._next_index))
            self._next_index += 1
        self._open_text.append(text)
        out.append(_DELTA[kind](self._next_index - 1, text))

    def _tool_fragment(self, part: dict[str, Any], position: int, out: list[ChatEvent]) -> None:
        function = part.get("function")
        if function is None:
            function = {}
        if not isinstance(function, dict):
            raise MalformedChunk("The model server sent a tool call whose `function` is malformed.")
        server_id = part.get("id") if isinstance(part.get("id"), str) and part.get("id") else None
        name = function.get("name") if isinstance(function.get("name"), str) else None
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            raise MalformedChunk("The model server sent tool-call arguments that are not a string.")
        key = self._key(part, server_id, position)
        if key in self._closed_keys:
            if arguments:
                raise InterleavedToolCall(
                    "The model server went back to a tool call it had finished; its arguments "
                    "cannot be passed on in order."
                )
            return
        call = self._calls.get(key)
        if call is None:
            if not name:
                if server_id:
                    self._unnamed_ids.setdefault(key, server_id)
                if arguments:
                    self._unnamed.setdefault(key, []).append(arguments)
                else:
                    self._unnamed.setdefault(key, [])
                return
            call = self._start_call(key, name, server_id or self._unnamed_ids.get(key), out)
        if arguments:
            call.arguments.append(arguments)
            out.append(ToolArgumentsDelta(call.index, call.call_id, arguments))

    def _key(self, part: dict[str, Any], server_id: str | None, position: int) -> Any:
        index = part.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        if index is not None:
            raise MalformedChunk("The model server sent a tool call whose `index` is not a number.")
        # No index: a fragment with a new id is a new call; one without an id continues the
        # call now open (or the call at its position in the list).
        if server_id is not None:
            for key, call in self._calls.items():
                if call.call_id == server_id:
                    return key
            return ("id", server_id)
        if self._open_call is not None:
            for key, call in self._calls.items():
                if call is self._open_call:
                    return key
        return position

    def _start_call(
        self, key: Any, name: str, server_id: str | None, out: list[ChatEvent]
    ) -> _ToolCall:
        self._close(out)
        call = _ToolCall(
            index=self._next_index,
            call_id=server_id or self._make_call_id(),
            name=name,
            arguments=[],
        )
        self._next_index += 1
        self._calls[key] = call
        self._open_kind, self._open_call = "tool", call
        self._calls_made += 1
        out.append(ToolCallStarted(call.index, call.call_id, call.name))
        for held in self._unnamed.pop(key, ()):
            call.arguments.append(held)
            out.append(ToolArgumentsDelta(call.index, call.call_id, held))
        self._unnamed_ids.pop(key, None)
        return call

    def _close(self, out: list[ChatEvent]) -> None:
        kind = self._open_kind
        if kind is None:
            return
        call = self._open_call
        if call is not None:
            out.append(ToolCallDone(call.index, call.call_id, call.name, "".join(call.arguments)))
            for key, known in list(self._calls.items()):
                if known is call:
                    self._closed_keys.add(key)
                    del self._calls[key]
            self._open_call = None
        else:
            out.append(_DONE[kind](self._next_index - 1, "".join(self._open_text)))
            self._open_text = []
        self._open_kind = None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # a few servers send content parts
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _error_message(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:500]
    if isinstance(error, str):
        return error[:500]
    return "The model server reported an error mid-stream."


def events_from_completion(
    answer: Any, *, make_call_id: Callable[[], str] = new_call_id
) -> list[ChatEvent]:
    """The events of a whole `chat.completion`: the same as for the same answer streamed."""
    if not isinstance(answer, dict):
        raise MalformedChunk("The model server's answer is not a JSON object.")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedChunk("The model server's answer has no choices.")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedChunk("The model server's answer has no message.")
    delta = dict(message)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        # A whole answer's calls carry no index: their order is their index.
        delta["tool_calls"] = [
            {**call, "index": position} if isinstance(call, dict) else call
            for position, call in enumerate(calls)
        ]
    translator = ChatEventTranslator(make_call_id=make_call_id)
    chunk = {
        "model": answer.get("model"),
        "usage": answer.get("usage"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}],
    }
    return [*translator.feed(chunk), *translator.finish()]


def collect(chunks: Iterable[Any], **kwargs: Any) -> list[ChatEvent]:
    """Every event of a whole stream of chunks (for tests and non-streamed callers)."""
    translator = ChatEventTranslator(**kwargs)
    events: list[ChatEvent] = []
    for chunk in chunks:
        events.extend(translator.feed(chunk))
    events.extend(translator.finish())
    return events
