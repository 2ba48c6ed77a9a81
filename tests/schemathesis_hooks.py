"""Schemathesis checks and hooks of our own, loaded by the fuzz test through SCHEMATHESIS_HOOKS."""

import schemathesis
from hypothesis import strategies as st

from tests.security.hostile import HOSTILE_RESPONSE_FORMATS

DOCUMENTED_GATEWAY_STATUSES = {502, 503, 504}


@schemathesis.hook
def flatmap_body(ctx, body):
    """Sometimes swap a JSON body's response_format for a hostile schema."""
    if not (isinstance(body, dict) and isinstance(body.get("messages"), list)):
        return st.just(body)
    hostile = st.sampled_from(HOSTILE_RESPONSE_FORMATS).map(
        lambda response_format: {**body, "response_format": response_format}
    )
    return st.one_of(st.just(body), hostile)


@schemathesis.check
def no_gateway_fault(ctx, response, case):
    """
    No 500, ever. A 5xx is allowed only as a documented upstream verdict (502/503/504 with a
    detail), which the fake model server produces for answers that break a requested schema.
    """
    if response.status_code < 500:
        return None
    if response.status_code not in DOCUMENTED_GATEWAY_STATUSES:
        raise AssertionError(f"Gateway fault {response.status_code}: {response.text[:500]}")
    body = response.json()
    if not ("detail" in body or "error" in body):
        raise AssertionError(f"{response.status_code} without a detail: {response.text[:500]}")
    return None


@schemathesis.check
def hostile_schema_is_refused(ctx, response, case):
    """A hostile response_format is a client error, answered briefly, never a model call."""
    body = case.body if isinstance(case.body, dict) else {}
    if body.get("response_format") not in HOSTILE_RESPONSE_FORMATS:
        return None
    if case.path.startswith("/v1/messages"):
        # Not a field of Anthropic's API: ignored there like its other unknown fields (its
        # schemas come in `output_config.format`, checked in tests/anthropic_compat).
        return None
    if not 400 <= response.status_code < 500:
        raise AssertionError(f"Hostile schema got {response.status_code}: {response.text[:500]}")
    if len(response.content) > 4000:
        raise AssertionError(f"Hostile schema echoed {len(response.content)} bytes back")
    return None
