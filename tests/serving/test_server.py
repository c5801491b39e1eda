"""Connection timeouts of the real uvicorn server (medmodal.serving.server): stalled heads,
stalled bodies and idle keep-alive connections are closed; a normal client is unaffected."""

from __future__ import annotations

import socket
import time

import pytest

from medmodal.serving.app import create_app
from medmodal.serving.security import ServingLimits

from .conftest import LiveServer

LIMITS = ServingLimits(head_timeout_s=1.0, body_timeout_s=1.0, keep_alive_s=1.0)


@pytest.fixture(scope="module")
def server(tiny_run, predictor):
    with LiveServer(create_app(tiny_run, predictor=predictor, limits=LIMITS), limits=LIMITS) as live:
        yield live


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)  # far beyond the 1 s limits: a server that never closes fails the test
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took."""
    started, data = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the server kept the connection open > 10 s; got {data!r}")
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def test_a_silent_connection_is_closed(server):
    with connect(server) as sock:
        data, seconds = read_until_closed(sock)
    assert data == b"" and seconds < 6


def test_a_trickling_request_head_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        for _ in range(3):  # keep sending a header byte now and then, never finishing the head
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        data, _ = read_until_closed(sock)
    assert data == b"" and time.monotonic() - started < 6


def test_a_stalled_body_gets_408_and_the_connection_closes(server):
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head + b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\ncough')
        data, seconds = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"did not arrive within 1 seconds" in data
    assert seconds < 6


def test_an_idle_keep_alive_connection_is_closed_and_normal_requests_work(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, seconds = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in data
    assert seconds < 6  # closed after the 1 s keep-alive, not left open


def test_a_slow_but_steady_client_within_the_limits_succeeds(server):
    body = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\ncough and fever\r\n--b--\r\n'
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head[:20])
        time.sleep(0.3)
        sock.sendall(head[20:] + body[:10])
        time.sleep(0.3)
        sock.sendall(body[10:])
        data, _ = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]


def test_connections_beyond_the_limit_get_503(tiny_run, predictor):
    limits = ServingLimits(max_connections=2, head_timeout_s=5.0)
    with LiveServer(create_app(tiny_run, predictor=predictor, limits=limits), limits=limits) as live:
        idle = [connect(live) for _ in range(2)]  # two connections that send nothing
        try:
            time.sleep(0.3)
            with connect(live) as sock:
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data, _ = read_until_closed(sock)
            assert data.startswith(b"HTTP/1.1 503"), data[:200]
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        with connect(live) as sock:  # the server recovers once they are gone
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
