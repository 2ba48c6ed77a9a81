"""Schemathesis checks of our own, loaded by the fuzz test through SCHEMATHESIS_HOOKS."""

import schemathesis

DOCUMENTED_GATEWAY_STATUSES = {502, 503, 504}


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
