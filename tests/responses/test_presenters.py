from responses.presenters import ResponseBuilder, response_usage
from translation import chat_events as ev


def builder(**kwargs) -> ResponseBuilder:
    return ResponseBuilder(
        request={"metadata": {"k": "v"}, "store": False}, model="m", response_id="resp_1", **kwargs
    )


def run(b: ResponseBuilder, events) -> list[dict]:
    out = b.start()
    for event in events:
        out += b.events_for(event)
    return out


def test_text_events_in_order_with_sequence_numbers():
    b = builder()
    out = run(
        b,
        [
            ev.TextStarted(0),
            ev.TextDelta(0, "Hi"),
            ev.TextDelta(0, "!"),
            ev.TextDone(0, "Hi!"),
            ev.Finished("stop", ev.Usage(3, 2, 5, cached_tokens=1), "m", 0),
        ],
    )
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(10))
    added = out[2]["item"]
    assert added["content"] == [] and added["status"] == "in_progress"
    done = out[-2]["item"]
    assert done["status"] == "completed"
    assert done["content"][0]["text"] == "Hi!"
    final = out[-1]["response"]
    assert final["status"] == "completed"
    assert final["metadata"] == {"k": "v"}
    assert final["store"] is False
    assert final["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 1},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    assert final["output"] == [done]


def test_the_created_event_does_not_change_when_the_output_does():
    b = builder()
    out = run(b, [ev.TextStarted(0), ev.TextDelta(0, "x"), ev.TextDone(0, "x")])
    assert out[0]["response"]["output"] == []
    assert out[2]["item"]["content"] == []


def test_tool_call_events_carry_the_call_and_a_namespace_is_split_back():
    b = builder(namespaced={"crm__lookup": ("crm", "lookup")})
    out = run(
        b,
        [
            ev.ToolCallStarted(0, "call_1", "crm__lookup"),
            ev.ToolArgumentsDelta(0, "call_1", '{"a"'),
            ev.ToolArgumentsDelta(0, "call_1", ":1}"),
            ev.ToolCallDone(0, "call_1", "crm__lookup", '{"a":1}'),
        ],
    )
    item = out[2]["item"]
    assert (item["type"], item["call_id"], item["name"], item["namespace"]) == (
        "function_call",
        "call_1",
        "lookup",
        "crm",
    )
    assert [e.get("delta") for e in out[3:5]] == ['{"a"', ":1}"]
    assert out[5]["type"] == "response.function_call_arguments.done"
    assert out[5]["arguments"] == '{"a":1}'
    assert out[6]["item"]["arguments"] == '{"a":1}'


def test_reasoning_is_a_reasoning_item_with_reasoning_text():
    b = builder()
    out = run(b, [ev.ReasoningStarted(0), ev.ReasoningDelta(0, "hm"), ev.ReasoningDone(0, "hm")])
    assert [e["type"] for e in out[2:]] == [
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
    ]
    assert out[-1]["item"]["content"] == [{"type": "reasoning_text", "text": "hm"}]
    assert out[-1]["item"]["summary"] == []


def test_refusal_is_a_message_with_a_refusal_part():
    b = builder()
    out = run(b, [ev.RefusalStarted(0), ev.RefusalDelta(0, "No."), ev.RefusalDone(0, "No.")])
    assert out[3]["part"] == {"type": "refusal", "refusal": ""}
    assert out[-1]["item"]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_a_length_cut_is_incomplete():
    b = builder()
    out = run(b, [ev.Finished("length", None, "m", 0)])
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_failure_marks_open_items_incomplete_and_ends_with_response_failed():
    b = builder()
    run(b, [ev.TextStarted(0), ev.TextDelta(0, "par")])
    [failed] = b.fail("The server went away.")
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "The server went away.",
    }
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert failed["response"]["output"][0]["content"][0]["text"] == "par"


def test_usage_without_counts_is_all_zeros():
    assert response_usage(None)["total_tokens"] == 0
