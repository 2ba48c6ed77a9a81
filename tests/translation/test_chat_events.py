import itertools
import random

import pytest

from translation.chat_events import (
    ChatEventTranslator,
    Finished,
    ReasoningDelta,
    ReasoningDone,
    ReasoningStarted,
    RefusalDelta,
    RefusalDone,
    RefusalStarted,
    TextDelta,
    TextDone,
    TextStarted,
    ToolArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    Usage,
    collect,
    events_from_completion,
    usage_from_chat,
)
from translation.exceptions import (
    InterleavedToolCall,
    MalformedChunk,
    TranslationError,
    UpstreamStreamError,
)


def ids():
    counter = itertools.count()
    return lambda: f"call_gen{next(counter)}"


def chunk(delta=None, finish_reason=None, **extra):
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish_reason}
    return {"object": "chat.completion.chunk", "model": "m", "choices": [choice], **extra}


def call_fragment(index, *, id=None, name=None, arguments=None):
    function = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    part = {"index": index, "function": function}
    if id is not None:
        part["id"], part["type"] = id, "function"
    return chunk({"tool_calls": [part]})


def test_text_stream_gives_started_deltas_done_and_finished_with_usage():
    events = collect(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish_reason="stop"),
            {
                "choices": [],
                "model": "m",
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 2,
                    "total_tokens": 12,
                    "prompt_tokens_details": {"cached_tokens": 8},
                },
            },
        ]
    )
    assert events == [
        TextStarted(0),
        TextDelta(0, "Hel"),
        TextDelta(0, "lo"),
        TextDone(0, "Hello"),
        Finished(
            finish_reason="stop",
            usage=Usage(input_tokens=10, output_tokens=2, total_tokens=12, cached_tokens=8),
            model="m",
            tool_calls=0,
        ),
    ]


def test_each_chunk_yields_its_events_at_once():
    translator = ChatEventTranslator()
    assert translator.feed(chunk({"content": "a"})) == [TextStarted(0), TextDelta(0, "a")]
    assert translator.feed(chunk({"content": "b"})) == [TextDelta(0, "b")]
    assert translator.feed(chunk({}, finish_reason="stop")) == [TextDone(0, "ab")]
    assert translator.finish() == [Finished("stop", None, "m", 0)]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_then_text_are_two_parts(field):
    events = collect(
        [
            chunk({field: "think"}),
            chunk({field: "ing"}),
            chunk({"content": "answer"}, finish_reason="stop"),
        ]
    )
    assert events[:7] == [
        ReasoningStarted(0),
        ReasoningDelta(0, "think"),
        ReasoningDelta(0, "ing"),
        ReasoningDone(0, "thinking"),
        TextStarted(1),
        TextDelta(1, "answer"),
        TextDone(1, "answer"),
    ]


def test_a_delta_with_both_reasoning_fields_is_read_once():
    events = collect([chunk({"reasoning_content": "x", "reasoning": "x"})])
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [ReasoningDelta(0, "x")]


def test_refusal_is_its_own_part():
    events = collect([chunk({"refusal": "I can't"}, finish_reason="stop")])
    assert events[:3] == [RefusalStarted(0), RefusalDelta(0, "I can't"), RefusalDone(0, "I can't")]


def test_vllm_style_tool_call_streams_arguments_as_they_come():
    translator = ChatEventTranslator(make_call_id=ids())
    out = []
    out += translator.feed(call_fragment(0, id="chatcmpl-tool-1", name="get_weather", arguments=""))
    assert out == [ToolCallStarted(0, "chatcmpl-tool-1", "get_weather")]
    for piece in ['{"ci', 'ty": "Par', 'is"}']:
        assert translator.feed(call_fragment(0, arguments=piece)) == [
            ToolArgumentsDelta(0, "chatcmpl-tool-1", piece)
        ]
    assert translator.feed(chunk({}, finish_reason="tool_calls")) == [
        ToolCallDone(0, "chatcmpl-tool-1", "get_weather", '{"city": "Paris"}')
    ]
    assert translator.finish() == [Finished("tool_calls", None, "m", 1)]


def test_parallel_tool_calls_by_index_are_sequential_parts():
    events = collect(
        [
            chunk({"content": "Let me check."}),
            call_fragment(0, id="a", name="f", arguments='{"x"'),
            call_fragment(0, arguments=": 1}"),
            call_fragment(1, id="b", name="g", arguments="{}"),
        ],
        make_call_id=ids(),
    )
    assert events == [
        TextStarted(0),
        TextDelta(0, "Let me check."),
        TextDone(0, "Let me check."),
        ToolCallStarted(1, "a", "f"),
        ToolArgumentsDelta(1, "a", '{"x"'),
        ToolArgumentsDelta(1, "a", ": 1}"),
        ToolCallDone(1, "a", "f", '{"x": 1}'),
        ToolCallStarted(2, "b", "g"),
        ToolArgumentsDelta(2, "b", "{}"),
        ToolCallDone(2, "b", "g", "{}"),
        Finished(None, None, "m", 2),
    ]


def test_two_calls_in_one_chunk():
    both = chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}},
                {"index": 1, "id": "b", "function": {"name": "g", "arguments": "[]"}},
            ]
        },
        finish_reason="tool_calls",
    )
    events = collect([both])
    assert [type(e).__name__ for e in events] == [
        "ToolCallStarted",
        "ToolArgumentsDelta",
        "ToolCallDone",
        "ToolCallStarted",
        "ToolArgumentsDelta",
        "ToolCallDone",
        "Finished",
    ]
    assert events[2] == ToolCallDone(0, "a", "f", "{}")
    assert events[5] == ToolCallDone(1, "b", "g", "[]")


def test_a_late_server_id_keeps_the_generated_one():
    events = collect(
        [
            call_fragment(0, name="f", arguments='{"a":'),
            call_fragment(0, id="late", arguments="1}"),
        ],
        make_call_id=ids(),
    )
    assert events[:4] == [
        ToolCallStarted(0, "call_gen0", "f"),
        ToolArgumentsDelta(0, "call_gen0", '{"a":'),
        ToolArgumentsDelta(0, "call_gen0", "1}"),
        ToolCallDone(0, "call_gen0", "f", '{"a":1}'),
    ]


def test_arguments_before_the_name_are_released_in_order_when_it_comes():
    events = collect(
        [
            call_fragment(0, id="x", arguments='{"'),
            call_fragment(0, arguments="a"),
            call_fragment(0, name="f", arguments='": 1}'),
        ]
    )
    assert events[:5] == [
        ToolCallStarted(0, "x", "f"),
        ToolArgumentsDelta(0, "x", '{"'),
        ToolArgumentsDelta(0, "x", "a"),
        ToolArgumentsDelta(0, "x", '": 1}'),
        ToolCallDone(0, "x", "f", '{"a": 1}'),
    ]


def test_a_call_never_named_still_comes_out_at_the_end():
    events = collect([call_fragment(0, id="x", arguments="{}")])
    assert events[:3] == [
        ToolCallStarted(0, "x", ""),
        ToolArgumentsDelta(0, "x", "{}"),
        ToolCallDone(0, "x", "", "{}"),
    ]


def test_name_repeated_in_every_fragment_does_not_start_a_new_call():
    events = collect(
        [
            call_fragment(0, id="x", name="f", arguments="{"),
            call_fragment(0, id="x", name="f", arguments="}"),
        ]
    )
    assert [type(e).__name__ for e in events].count("ToolCallStarted") == 1
    assert events[3] == ToolCallDone(0, "x", "f", "{}")


def test_calls_without_index_are_told_apart_by_id():
    def fragment(**function_and_id):
        part = {"function": {k: v for k, v in function_and_id.items() if k != "id"}}
        if "id" in function_and_id:
            part["id"] = function_and_id["id"]
        return chunk({"tool_calls": [part]})

    events = collect(
        [
            fragment(id="a", name="f", arguments='{"q":'),
            fragment(arguments='"1"}'),
            fragment(id="b", name="g", arguments="{}"),
        ]
    )
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert done == [ToolCallDone(0, "a", "f", '{"q":"1"}'), ToolCallDone(1, "b", "g", "{}")]


def test_going_back_to_a_finished_call_fails_rather_than_reorder():
    translator = ChatEventTranslator()
    translator.feed(call_fragment(0, id="a", name="f", arguments="{"))
    translator.feed(call_fragment(1, id="b", name="g", arguments="{"))
    with pytest.raises(InterleavedToolCall):
        translator.feed(call_fragment(0, arguments="}"))


def _split_everywhere(text, rng):
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("seed", range(40))
def test_arguments_survive_any_chunking_byte_for_byte(seed):
    rng = random.Random(seed)
    calls = [
        ("c0", "search", '{"query": "caf\u00e9 \\"quoted\\" \\u00e9", "n": [1, 2, {"a": null}]}'),
        ("c1", "lookup", "{}"),
        ("c2", "write", '{"text": "line\\nbreak", "emoji": "\U0001f600"}'),
    ]
    chunks = []
    for index, (call_id, name, arguments) in enumerate(calls):
        pieces = _split_everywhere(arguments, rng)
        first = rng.choice(["with_args", "name_only", "empty_args"])
        if first == "with_args":
            chunks.append(call_fragment(index, id=call_id, name=name, arguments=pieces.pop(0)))
        else:
            empty = "" if first == "empty_args" else None
            chunks.append(call_fragment(index, id=call_id, name=name, arguments=empty))
        for piece in pieces:
            chunks.append(call_fragment(index, arguments=piece))
    chunks.append(chunk({}, finish_reason="tool_calls"))
    events = collect(chunks)
    for position, (call_id, name, arguments) in enumerate(calls):
        fragments = [
            e.fragment for e in events if isinstance(e, ToolArgumentsDelta) and e.index == position
        ]
        assert "".join(fragments) == arguments
        assert ToolCallDone(position, call_id, name, arguments) in events
    indexes = [e.index for e in events if not isinstance(e, Finished)]
    assert indexes == sorted(indexes)


def test_whole_answer_gives_the_same_events_as_its_stream():
    answer = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "reasoning_content": "hmm",
                    "content": "Calling.",
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "b",
                            "type": "function",
                            "function": {"name": "g", "arguments": "[1]"},
                        },
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    events = events_from_completion(answer)
    assert events == [
        ReasoningStarted(0),
        ReasoningDelta(0, "hmm"),
        ReasoningDone(0, "hmm"),
        TextStarted(1),
        TextDelta(1, "Calling."),
        TextDone(1, "Calling."),
        ToolCallStarted(2, "a", "f"),
        ToolArgumentsDelta(2, "a", "{}"),
        ToolCallDone(2, "a", "f", "{}"),
        ToolCallStarted(3, "b", "g"),
        ToolArgumentsDelta(3, "b", "[1]"),
        ToolCallDone(3, "b", "g", "[1]"),
        Finished("tool_calls", Usage(3, 4, 7), "m", 2),
    ]


def test_whole_answer_with_empty_content_has_no_parts():
    answer = {"choices": [{"message": {"content": None}, "finish_reason": "length"}]}
    assert events_from_completion(answer) == [Finished("length", None, None, 0)]


def test_other_choices_are_ignored():
    other = {"choices": [{"index": 1, "delta": {"content": "no"}, "finish_reason": None}]}
    assert collect([other]) == [Finished(None, None, None, 0)]


def test_error_chunk_raises_upstream_stream_error_with_its_message():
    translator = ChatEventTranslator()
    translator.feed(chunk({"content": "partial"}))
    with pytest.raises(UpstreamStreamError, match="out of memory"):
        translator.feed({"error": {"message": "out of memory", "code": 500}})
    assert translator.open_index == 0


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"choices": "x"},
        {"choices": ["x"]},
        {"choices": [{"index": 0, "delta": "x"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": ["x"]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "0", "function": {}}]}}]},
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 1}}]}}
            ]
        },
    ],
)
def test_malformed_chunks_raise_malformed_chunk(bad):
    with pytest.raises(MalformedChunk):
        ChatEventTranslator().feed(bad)
    assert issubclass(MalformedChunk, TranslationError)


def test_usage_ignores_non_counts():
    assert usage_from_chat({"prompt_tokens": "3", "completion_tokens": True}) is None
    assert usage_from_chat(
        {"prompt_tokens": 1, "completion_tokens_details": {"reasoning_tokens": 5}}
    ) == Usage(input_tokens=1, reasoning_tokens=5)
