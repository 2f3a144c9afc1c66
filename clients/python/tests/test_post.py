"""The background sender's ``http.client`` connection (``streampca._post``) against a
small real HTTP server on loopback whose answers the tests choose: retries after 503,
a keep-alive connection the server closed, errors mapped as the httpx client maps them.
(Its normal use against the real service is covered by test_sklearn_background.py.)"""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List, Tuple

import numpy as np
import pytest

import streampca
from streampca._post import NpyBody, NpyPoster


class Script:
    """What the server answers, in order (status, headers, close after answering)."""

    def __init__(self, answers: List[Tuple[int, dict, bool]]) -> None:
        self.answers = list(answers)
        self.bodies: List[bytes] = []
        self.connections: set = set()
        # Set once the server has closed a connection it was told to close.
        self.closed = threading.Event()


def serve(script: Script) -> Tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:
            script.connections.add(self.client_address)
            n = int(self.headers["content-length"])
            script.bodies.append(self.rfile.read(n))
            status, headers, close = script.answers.pop(0)
            body = json.dumps(
                {"sequence": len(script.bodies), "samples": 1.0}
                if status == 200
                else {"error": {"code": headers.pop("code", "x"), "message": "scripted"}}
            ).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if close:
                # Close without saying so (no "connection: close"), as a server's idle
                # timeout does: the client must notice before its next request.
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                script.closed.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(300, 12))


@pytest.fixture
def scripted() -> Iterator:
    servers = []

    def start(answers: List[Tuple[int, dict, bool]]) -> Tuple[Script, str]:
        script = Script(answers)
        server, url = serve(script)
        servers.append(server)
        return script, url

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_body_is_the_npy_file_of_the_rows(scripted, rows):
    script, url = scripted([(200, {}, False)])
    with streampca.Client(url) as c:
        p = NpyPoster(c)
        r = p.post("/v1/models/m/samples", NpyBody(rows))
        p.close()
    assert r.json()["sequence"] == 1
    back = np.load(io.BytesIO(script.bodies[0]), allow_pickle=False)
    assert back.dtype == np.float64 and np.array_equal(back, rows)
    f32 = rows.astype(np.float32)
    assert NpyBody(f32).size == len(NpyBody(f32).prefix) + f32.nbytes


def test_503_is_retried_after_retry_after_and_the_same_body_sent_again(scripted, rows):
    script, url = scripted(
        [(503, {"retry-after": "0", "code": "overloaded"}, False), (200, {}, False)]
    )
    with streampca.Client(url, retries=2) as c:
        p = NpyPoster(c)
        assert p.post("/v1/models/m/samples", NpyBody(rows)).status_code == 200
        p.close()
    assert len(script.bodies) == 2 and script.bodies[0] == script.bodies[1]


def test_error_answers_raise_the_clients_errors(scripted, rows):
    script, url = scripted([(404, {"code": "not_found"}, False)])
    with streampca.Client(url) as c:
        p = NpyPoster(c)
        with pytest.raises(streampca.NotFoundError, match="scripted"):
            p.post("/v1/models/m/samples", NpyBody(rows))
        p.close()


def test_a_connection_the_server_closed_is_replaced_before_the_next_request(scripted, rows):
    script, url = scripted([(200, {}, True), (200, {}, False), (200, {}, False)])
    with streampca.Client(url, retries=0) as c:
        p = NpyPoster(c)
        for i in range(3):  # retries=0: a request on the dead connection would fail
            assert p.post("/v1/models/m/samples", NpyBody(rows[i:])).json()["sequence"] == i + 1
            if i == 0:
                # The answer can arrive before the server's close does: the test is about
                # a connection already closed when the next request starts.
                assert script.closed.wait(10)
        p.close()
    # The first connection was closed by the server; the next two shared a new one.
    assert len(script.connections) == 2


def test_a_refused_connection_is_a_connect_error(rows):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with streampca.Client(f"http://127.0.0.1:{port}", retries=0) as c:
        p = NpyPoster(c)
        with pytest.raises(streampca.ServiceUnavailableError) as info:
            p.post("/v1/models/m/samples", NpyBody(rows))
    import httpx

    # The sender keeps such rows (never sent) and sends them again on flush().
    assert isinstance(info.value.__cause__, httpx.ConnectError)
