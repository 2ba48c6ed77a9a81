"""
Hostile clients at the transport, end to end against a real gateway: huge and slow headers and
bodies, forms with too many parts, odd paths and methods, credentials in BASE_URL, streams cut
by a failure or by the shutdown timeout, and draining with several workers.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import API_KEY
from tests.security.raw_http import (
    connect,
    raw_request,
    read_response,
    serve_log,
    start_serve,
    status_of,
    wait_closed,
)
from tests.waiting import wait_until


def post(gateway, path: str, **kwargs) -> httpx.Response:
    with gateway.client() as client:
        return client.post(path, **kwargs)


QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def impatient_gateway(gateways, upstream):
    """A gateway with short header and body deadlines, so tests need not wait long."""
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="impatient",
        SERVER__HEADER_TIMEOUT="1",
        SERVER__BODY_TIMEOUT="1",
        SERVER__MAX_HEADER_BYTES="16384",
    )


# --- Huge headers ------------------------------------------------------------------------------


def test_huge_header_without_a_key_is_refused_not_answered(gateway):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n"
    with connect(gateway.url) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: what we want
        raw = read_response(sock)
    assert status_of(raw) in (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, None), raw[:200]
    assert httpx.get(f"{gateway.url}/healthz").status_code == HTTPStatus.OK


def test_header_over_the_limit_gets_431_naming_it(impatient_gateway):
    raw = raw_request(
        impatient_gateway.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    )
    assert status_of(raw) == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    assert b"16384 bytes" in raw


def test_headers_under_the_limit_still_work(impatient_gateway):
    headers = {"X-API-Key": API_KEY, "X-Padding": "p" * 10_000}
    response = httpx.post(
        f"{impatient_gateway.url}/text_model/chat/completion", json=QUESTION, headers=headers
    )
    assert response.status_code == HTTPStatus.OK


def test_header_floods_do_not_stall_healthz(gateway):
    stop = threading.Event()

    def flood() -> None:
        chunk = b"a" * 1_000_000
        while not stop.is_set():
            try:
                with connect(gateway.url, timeout=5) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                    for _ in range(100):  # up to 100 MB of one header
                        sock.sendall(chunk)
            except OSError:
                pass

    flooders = [threading.Thread(target=flood) for _ in range(3)]
    for thread in flooders:
        thread.start()
    try:
        time.sleep(0.5)
        for _ in range(20):
            # A generous deadline (the figure itself: bench/hostile_clients.py).
            assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == HTTPStatus.OK
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in flooders:
            thread.join()
    # Unbounded headers stalled /healthz for 19 s; bounded ones leave it answering all along.


# --- Slow clients ------------------------------------------------------------------------------


def test_half_sent_headers_get_408_after_the_header_timeout(impatient_gateway):
    with connect(impatient_gateway.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        raw = read_response(sock)
    assert status_of(raw) == HTTPStatus.REQUEST_TIMEOUT


def test_silent_connection_is_closed_after_the_header_timeout(impatient_gateway):
    with connect(impatient_gateway.url) as sock:
        raw = read_response(sock)  # sends nothing at all
    assert status_of(raw) == HTTPStatus.REQUEST_TIMEOUT


def test_hundreds_of_half_sent_requests_are_all_let_go(impatient_gateway):
    sockets = []
    try:
        for _ in range(300):
            sock = connect(impatient_gateway.url)
            sock.sendall(b"POST /text_model/chat/completion HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        answered = [status_of(read_response(sock)) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert answered == [HTTPStatus.REQUEST_TIMEOUT] * 300


def test_half_sent_body_gets_408_after_the_body_timeout(impatient_gateway):
    head = (
        "POST /text_model/chat/completion HTTP/1.1\r\nHost: x\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with connect(impatient_gateway.url) as sock:
        sock.sendall(head.encode() + b'{"messa')
        raw = read_response(sock)
    assert status_of(raw) == HTTPStatus.REQUEST_TIMEOUT
    assert "Traceback" not in impatient_gateway.log()


def test_idle_kept_alive_connection_is_not_a_slow_client(impatient_gateway):
    with httpx.Client(base_url=impatient_gateway.url, headers={"X-API-Key": API_KEY}) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == HTTPStatus.OK
            time.sleep(1.5)  # longer than the header timeout, shorter than keep-alive's 5 s
        assert client.post("/text_model/chat/completion", json=QUESTION).status_code == 200


# --- Client faults are 4xx, never 500 ------------------------------------------------------------


def tiny_png() -> bytes:
    from tests.images import image_bytes

    return image_bytes("PNG", size=(8, 8))


def test_form_with_too_many_fields_is_400(gateway):
    fields = {f"field{i}": "x" for i in range(1001)}
    fields["prompt"] = "hi"
    response = post(
        gateway,
        "/image_model/chat/completion",
        data=fields,
        files=[("image", ("a.png", tiny_png(), "image/png"))],
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.text
    assert "more than 1000 fields" in response.json()["detail"]


def test_urlencoded_form_with_too_many_fields_is_400(gateway):
    body = "&".join(f"f{i}=x" for i in range(1001))
    response = post(
        gateway,
        "/image_model/chat/completion",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.text


def test_form_with_too_many_files_is_400(gateway):
    files = [("image", (f"{i}.png", b"x", "image/png")) for i in range(101)]
    response = post(gateway, "/image_model/chat/completion", data={"prompt": "hi"}, files=files)
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.text
    assert "more than 100 files" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/playground", "/healthz"])
def test_options_on_pages_is_not_a_500(gateway, path):
    response = httpx.options(f"{gateway.url}{path}")
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.METHOD_NOT_ALLOWED), response.text


@pytest.mark.parametrize(
    "path",
    [
        b"/static/../llmapi/settings.py",
        b"/static/%2e%2e/llmapi/settings.py",
        b"/static/../../etc/passwd",
        b"/static/..%2f..%2fetc%2fpasswd",
    ],
)
def test_static_path_climbing_out_is_404(gateway, path):
    raw = raw_request(
        gateway.url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(raw) in (HTTPStatus.NOT_FOUND, HTTPStatus.BAD_REQUEST), raw[:300]
    assert b"SECRET_KEY" not in raw and b"root:" not in raw


# --- Credentials in BASE_URL ---------------------------------------------------------------------


def test_credentials_in_base_url_become_basic_auth_and_never_show(gateways, upstream):
    base = upstream.url.replace("http://", "http://alice:s3cr%40t-pass@")
    gateway = gateways.get(TEXT_MODEL__BASE_URL=base, TEXT_MODEL__MODEL_NAME="with-credentials")
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
        assert response.status_code == HTTPStatus.OK, response.text
        expected = "Basic " + base64.b64encode(b"alice:s3cr@t-pass").decode()
        assert upstream.last_request.headers["authorization"] == expected
        assert upstream.last_request.path == "/v1/chat/completions"
        ready = client.get("/readyz")
        upstream.behave(status=500)
        failed = client.post("/text_model/chat/completion", json=QUESTION)
    assert ready.status_code == HTTPStatus.OK, ready.text
    assert failed.status_code == HTTPStatus.BAD_GATEWAY
    for shown in (ready.text, failed.text, gateway.log()):
        assert "s3cr" not in shown and "alice" not in shown


def test_credentials_in_base_url_beside_an_api_key_refuse_to_start(tmp_path, upstream):
    base = upstream.url.replace("http://", "http://alice:s3cr3t-pass@")
    env = {"TEXT_MODEL__BASE_URL": base, "TEXT_MODEL__API_KEY": "sk-also-a-key"}
    with pytest.raises(RuntimeError, match="server exited"):
        process, _ = start_serve(tmp_path, env)
        wait_closed(process, timeout=0)  # it started after all: stop it, then fail
    log = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
    assert "TEXT_MODEL__BASE_URL holds a user name and password" in log
    assert "s3cr3t" not in log and "sk-also-a-key" not in log


# --- Streams end in-band -------------------------------------------------------------------------


def test_stream_whose_validation_crashes_ends_with_an_error_event(gateway, upstream):
    # A schema whose $ref points nowhere inside it: validating the answer fails.
    body = {
        **QUESTION,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}},
        },
    }
    upstream.behave(content='{"a": 1}')
    with gateway.client() as client:
        response = client.post("/text_model/chat/stream", json=body, headers=SSE)
    if response.status_code == HTTPStatus.BAD_REQUEST:
        return  # refused up front: nothing to cut mid-stream
    assert response.status_code == HTTPStatus.OK
    last = response.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\n"), response.text
    assert json.loads(last.split("data: ", 1)[1])["status"] == 500
    assert "Traceback" not in response.text


def test_streams_cut_at_shutdown_end_with_an_in_band_error(tmp_path, upstream):
    upstream.behave(chunks=[f"w{i} " for i in range(200)], chunk_interval=0.05)
    process, url = start_serve(
        tmp_path,
        {
            "TEXT_MODEL__BASE_URL": upstream.url,
            "TEXT_MODEL__MODEL_NAME": "cut",
            "SERVER__GRACEFUL_TIMEOUT": "1",
        },
    )
    v1_body = {"model": "cut", "stream": True, **QUESTION}
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            with (
                client.stream("POST", "/text_model/chat/stream", json=QUESTION, headers=SSE) as sse,
                client.stream("POST", "/v1/chat/completions", json=v1_body) as v1,
            ):
                sse_pieces, v1_pieces = sse.iter_text(), v1.iter_text()
                sse_text, v1_text = next(sse_pieces), next(v1_pieces)
                process.send_signal(signal.SIGTERM)
                sse_text += "".join(sse_pieces)
                v1_text += "".join(v1_pieces)
    finally:
        wait_closed(process)
    sse_last = sse_text.strip().split("\n\n")[-1]
    assert sse_last.startswith("event: error\n"), sse_text[-300:]
    assert json.loads(sse_last.split("data: ", 1)[1])["status"] == HTTPStatus.SERVICE_UNAVAILABLE
    v1_last = v1_text.strip().split("\n\n")[-1]
    assert "error" in json.loads(v1_last.removeprefix("data: ")), v1_text[-300:]
    assert "[DONE]" not in v1_text
    log = serve_log(tmp_path, url)
    assert "Task exception was never retrieved" not in log
    assert "Traceback" not in log
    assert "Application shutdown complete" in log


# --- Draining with several workers ---------------------------------------------------------------


def refused(url: str) -> bool:
    """A new connection is turned away at once: refused, or (when it reached a worker's backlog in
    the instant before that worker stopped listening) closed unanswered, which HTTP clients retry.
    A connection left hanging fails the test through the timeout."""
    try:
        httpx.get(f"{url}/healthz", timeout=5)
    except (httpx.ConnectError, httpx.RemoteProtocolError):
        return True
    return False


def test_draining_with_two_workers_refuses_new_connections_at_once(tmp_path, upstream):
    upstream.behave(chunks=[f"w{i} " for i in range(30)], chunk_interval=0.2)
    process, url = start_serve(
        tmp_path,
        {"TEXT_MODEL__BASE_URL": upstream.url, "SERVER__GRACEFUL_TIMEOUT": "10"},
        "--workers",
        "2",
    )
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            with client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response:
                pieces = response.iter_text()
                text = next(pieces)
                process.send_signal(signal.SIGTERM)
                # Refused (not accepted and left hanging until a timeout), while the stream is
                # still on.
                wait_until(lambda: refused(url), within=5)
                assert upstream.open_streams
                text += "".join(pieces)
        assert text == "".join(f"w{i} " for i in range(30))  # the stream in flight finished whole
    finally:
        wait_closed(process)
