import asyncio
import json
from dataclasses import replace
from http import HTTPStatus

import httpx
import pytest

from api.exceptions import status_of
from inference import services, structured
from inference.backends.openai_http import OpenAICompatibleBackend
from inference.exceptions import InvalidModelOutput, OutputCheckTooCostly
from tests.models import ANYONE, text_spec
from tests.security.hostile import COSTLY_ANSWER, COSTLY_SCHEMA, doubling_schema

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "rating", "summary"],
}
REVIEW_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "product_review", "schema": REVIEW_SCHEMA},
}
VALID = '{"sentiment": "positive", "rating": 5, "summary": "Great value."}'
OUT_OF_RANGE = '{"sentiment": "positive", "rating": 100, "summary": "Great value."}'
MESSAGES = [{"role": "user", "content": "Analyze this product review"}]


def test_valid_schema_output_is_parsed():
    check = structured.check_output(VALID, REVIEW_FORMAT)
    assert check.valid and check.parsed["rating"] == 5


def test_schema_violation_reports_path_and_message():
    check = structured.check_output(OUT_OF_RANGE, REVIEW_FORMAT)
    assert not check.valid
    assert check.errors == [{"path": "$.rating", "message": "100 is greater than the maximum of 5"}]


@pytest.mark.parametrize("text", ["Sure! Here it is", "[1, 2]", '"just a string"', "{broken"])
def test_json_object_mode_needs_a_json_object(text):
    assert not structured.check_output(text, {"type": "json_object"}).valid


def test_markdown_fence_around_json_is_accepted_and_removed():
    check = structured.check_output(f"```json\n{VALID}\n```", REVIEW_FORMAT)
    assert check.valid and check.text == VALID


def test_schema_dialect_follows_dollar_schema():
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "required": ["a"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": draft4}}
    assert not structured.check_output("{}", fmt).valid
    assert structured.check_output('{"a": 1}', fmt).valid


def scripted_transport(answers: list[str], seen: list[dict], status_for=None):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if status_for and (status := status_for(body)):
            return httpx.Response(status, json={"error": {"message": "unsupported"}})
        content = answers[min(len(seen) - 1, len(answers) - 1)]
        return httpx.Response(
            200,
            json={
                "model": "m",
                "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            },
        )

    return httpx.MockTransport(handler)


@pytest.fixture
def model(monkeypatch):
    spec = text_spec(servers=("http://m",), json_retries=1)
    holder = {}

    def use(answers, status_for=None, **changes):
        seen: list[dict] = []
        transport = scripted_transport(answers, seen, status_for)
        monkeypatch.setattr(
            services, "get_backend", lambda s: OpenAICompatibleBackend(s, transport=transport)
        )
        holder["spec"] = replace(spec, **changes)
        return holder["spec"], seen

    return use


async def test_invalid_then_valid_is_200_after_one_repair(model):
    spec, seen = model([OUT_OF_RANGE, VALID])
    result = await services.chat_completion(
        context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert result.parsed == json.loads(VALID)
    assert result.response == VALID
    assert len(seen) == 2
    repair = seen[1]["messages"]
    assert repair[1] == {"role": "assistant", "content": OUT_OF_RANGE}
    assert "$.rating" in repair[2]["content"] and "maximum" in repair[2]["content"]


async def test_invalid_twice_is_502_with_errors_and_last_output(model):
    spec, seen = model([OUT_OF_RANGE, OUT_OF_RANGE])
    with pytest.raises(InvalidModelOutput) as caught:
        await services.chat_completion(
            context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
        )
    assert status_of(caught.value) == HTTPStatus.BAD_GATEWAY
    assert "did not produce valid" in str(caught.value.detail)
    assert caught.value.extra["errors"][0]["path"] == "$.rating"
    assert caught.value.extra["output"] == OUT_OF_RANGE
    assert len(seen) == 2


async def test_invalid_json_in_json_object_mode_is_502(model):
    spec, _ = model(["not json at all"], json_retries=0)
    with pytest.raises(InvalidModelOutput) as caught:
        await services.chat_completion(
            context=ANYONE,
            spec=spec,
            messages=MESSAGES,
            params={"response_format": {"type": "json_object"}},
        )
    assert "Not valid JSON" in str(caught.value.detail)


async def test_text_format_is_not_validated(model):
    spec, seen = model(["plain words"])
    result = await services.chat_completion(
        context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": {"type": "text"}}
    )
    assert result.response == "plain words" and result.parsed is None and len(seen) == 1


def rejects_schema(body):
    return 400 if body.get("response_format", {}).get("type") == "json_schema" else None


async def test_server_refusing_json_schema_gets_json_object_plus_schema_prompt(model):
    spec, seen = model([VALID], status_for=rejects_schema)
    result = await services.chat_completion(
        context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert result.parsed["sentiment"] == "positive"
    assert seen[0]["response_format"] == REVIEW_FORMAT
    assert seen[1]["response_format"] == {"type": "json_object"}
    assert seen[1]["messages"][0]["role"] == "system"
    assert '"rating"' in seen[1]["messages"][0]["content"]


async def test_native_mode_does_not_fall_back(model):
    spec, seen = model([VALID], status_for=rejects_schema, json_schema_mode="native")
    with pytest.raises(Exception) as caught:
        await services.chat_completion(
            context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
        )
    assert status_of(caught.value) == HTTPStatus.BAD_REQUEST
    assert len(seen) == 1


async def test_prompt_mode_never_sends_json_schema(model):
    spec, seen = model([VALID], json_schema_mode="prompt")
    await services.chat_completion(
        context=ANYONE, spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert seen[0]["response_format"] == {"type": "json_object"}


# --- Client schemas are data: refused on arrival when unsafe ---------------------------------


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def refusal(schema: dict) -> str:
    with pytest.raises(structured.RefusedSchema) as caught:
        structured.inspect_schema(schema)
    return str(caught.value)


def test_file_ref_is_refused_and_never_read(tmp_path):
    secret = tmp_path / "s.json"
    secret.write_text('{"enum": ["TOPSECRET"]}')
    schema = {"type": "object", "properties": {"a": {"$ref": secret.as_uri()}}}
    message = refusal(schema)
    assert secret.as_uri() in message and "TOPSECRET" not in message
    # Even if it reached validation, the registry would not read the file.
    check = structured.check_output('{"a": "x"}', json_schema_format(schema))
    assert "TOPSECRET" not in str(check.errors)


def test_http_ref_is_refused_without_a_connection():
    assert "does not point inside the schema" in refusal({"$ref": "http://10.255.255.1/x"})


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"allOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "not": {"$ref": "#"}},
    ],
)
def test_ref_loop_that_consumes_nothing_is_refused(schema):
    assert "loop" in refusal(schema)


def test_recursive_schema_through_properties_is_accepted_and_validates():
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["children"],
            }
        },
        "$ref": "#/$defs/node",
    }
    structured.inspect_schema(tree)
    fmt = json_schema_format(tree)
    assert structured.check_output('{"children": [{"children": []}]}', fmt).valid
    assert not structured.check_output('{"children": [{}]}', fmt).valid


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"x": {"$anchor": "x", "type": "string"}}, "properties": {"a": {"$ref": "#x"}}},
        {
            "$id": "https://example.com/root",
            "$defs": {"x": {"$id": "x.json", "type": "string"}},
            "properties": {"a": {"$ref": "x.json"}},
        },
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": {"a": {"type": "string"}},
            "properties": {"a": {"$ref": "#/definitions/a"}},
        },
    ],
)
def test_references_inside_the_schema_resolve(schema):
    structured.inspect_schema(schema)
    assert not structured.check_output('{"a": 1}', json_schema_format(schema)).valid


def test_unresolvable_ref_is_refused_naming_it():
    assert "'#/$defs/nope'" in refusal({"$ref": "#/$defs/nope"})


def test_deep_schema_is_refused():
    schema: dict = {"type": "object"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    assert "levels deep" in refusal(schema)


def test_large_schema_is_refused_and_not_quoted():
    message = refusal({"type": "object", "properties": {"a": {"pattern": "a" * 900_000}}})
    assert "bytes" in message and len(message) < 300


def test_doubling_anyof_chain_is_refused():
    defs = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(24)
    }
    defs["d24"] = {"type": "string"}
    assert "subschemas" in refusal({"properties": {"a": {"$ref": "#/$defs/d0"}}, "$defs": defs})


@pytest.mark.parametrize("pattern", ["(?=a)b", r"(a)\1"])
def test_pattern_outside_re2_is_refused(pattern):
    assert "RE2" in refusal({"properties": {"a": {"pattern": pattern}}})
    assert "RE2" in refusal({"patternProperties": {pattern: {}}})


def test_unevaluated_properties_with_pattern_properties_is_refused():
    schema = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert "unevaluatedProperties" in refusal(schema)


def test_invalid_schema_names_the_place():
    assert "at properties/a/type" in refusal({"properties": {"a": {"type": 12}}})


# --- Answers are checked in linear time, within a budget -------------------------------------

REDOS = json_schema_format(
    {
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": "^(a+)+$"},
            "b": {
                "type": "object",
                "patternProperties": {"^(a+)+$": {"type": "integer"}},
                "additionalProperties": False,
            },
        },
    }
)


def test_catastrophic_pattern_is_matched_in_linear_time():
    evil = "a" * 5000 + "!"
    check = structured.check_output(json.dumps({"a": evil, "b": {evil: 1}}), REDOS)
    assert [e["path"] for e in check.errors] == ["$.a", "$.b"]
    assert all(len(e["message"]) < 400 for e in check.errors)
    good = structured.check_output(json.dumps({"a": "aaa", "b": {"aa": 1}}), REDOS)
    assert good.valid


UNIQUE = json_schema_format({"type": "object", "properties": {"a": {"uniqueItems": True}}})


@pytest.mark.parametrize(
    ("items", "unique"),
    [
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False, None], True),
        ([{"x": [1, {"y": 2}]}, {"x": [1, {"y": 2.0}]}], False),
        ([{"x": 1, "y": 2}, {"y": 2, "x": 1}], False),
        ([[1, 2], [2, 1]], True),
        ([{"k": i} for i in range(20_000)], True),
    ],
)
def test_unique_items_keeps_json_schema_equality(items, unique):
    assert structured.check_output(json.dumps({"a": items}), UNIQUE).valid is unique


def test_format_regex_in_answers_uses_re2():
    fmt = json_schema_format({"properties": {"r": {"format": "regex"}}})
    assert structured.check_output('{"r": "^(a+)+$"}', fmt).valid
    assert not structured.check_output('{"r": "(?=a)"}', fmt).valid


def test_answer_over_the_size_limit_is_invalid_without_parsing(settings):
    settings.STRUCTURED_OUTPUT = {**settings.STRUCTURED_OUTPUT, "max_answer_bytes": 100}
    check = structured.check_output(json.dumps({"a": "x" * 200}), {"type": "json_object"})
    assert not check.valid and "STRUCTURED_OUTPUT__MAX_ANSWER_BYTES" in check.errors[0]["message"]


def test_answer_nested_too_deeply_is_invalid():
    check = structured.check_output('{"a": ' + "[" * 100 + "]" * 100 + "}", {"type": "json_object"})
    assert not check.valid and "levels deep" in check.errors[0]["message"]


def test_error_messages_quote_little_of_the_schema():
    fmt = json_schema_format({"properties": {"a": {"enum": ["x" * 5000]}}})
    check = structured.check_output('{"a": "y"}', fmt)
    assert not check.valid and len(check.errors[0]["message"]) < 400


def test_costly_schema_is_the_worst_accepted_and_one_more_doubling_is_refused():
    structured.inspect_schema(COSTLY_SCHEMA)
    with pytest.raises(structured.RefusedSchema, match="MAX_SCHEMA_FANOUT"):
        structured.inspect_schema(doubling_schema(9))


async def test_check_past_its_budget_is_502_and_the_loop_stays_free():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker's first tick
    with pytest.raises(OutputCheckTooCostly) as caught:
        await structured.check_output_off_loop(
            COSTLY_ANSWER, json_schema_format(COSTLY_SCHEMA), seconds=0.5
        )
    task.cancel()
    assert status_of(caught.value) == HTTPStatus.BAD_GATEWAY
    assert "STRUCTURED_OUTPUT__VALIDATION_SECONDS" in str(caught.value.detail)
    # The loop kept turning while the thread validated (blocked, it would have ticked once).
    assert ticks >= 3


async def test_off_loop_check_returns_the_verdict():
    check = await structured.check_output_off_loop(VALID, REVIEW_FORMAT)
    assert check.valid and check.parsed["rating"] == 5


def test_every_jsonschema_keyword_that_uses_re_is_replaced():
    """jsonschema matches regexes with `re` in these keywords; an upgrade may add more."""
    import inspect

    from jsonschema import _keywords, _legacy_keywords, _utils

    users = {
        name
        for module in (_keywords, _legacy_keywords, _utils)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if "re.search(" in inspect.getsource(function)
    }
    # find_additional_properties serves only additionalProperties (replaced); the others serve
    # unevaluatedProperties, refused together with patternProperties by inspect_schema.
    handled = set(structured._SAFE_KEYWORDS) | {
        "find_additional_properties",
        "unevaluatedProperties",
        "unevaluatedProperties_draft2019",
        "find_evaluated_property_keys_by_schema",
    }
    assert users <= handled, users - handled
