"""``wait_until_fitted`` waits on the service (``GET /v1/models/{name}?fitted_sequence=S
&wait=T``) instead of polling: against the real server (the requests it makes, the
``T`` it asks for, the timeout), and against a small scripted HTTP server on loopback
for a service that refuses the parameters (cluster mode) or ignores them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List

import httpx
import numpy as np
import pytest

import streampca
from conftest import spiked


def status(fitted_sequence: int, fitted: bool, sequence: int = 3) -> dict:
    return {
        "name": "m", "dim": 8, "components": 2, "target_dim": None, "partitions": 1,
        "samples": 10.0, "batches": sequence, "sequence": sequence,
        "fitted_sequence": fitted_sequence, "steps": 1, "loss": None, "converged": fitted,
        "max_error_bound": 0.0 if fitted else None,
    }


class Recorder:
    """The query strings of the requests a client made."""

    def __init__(self, c: streampca.Client) -> None:
        self.queries: List[dict] = []
        c._http.event_hooks["request"].append(self.record)

    def record(self, request: httpx.Request) -> None:
        self.queries.append(dict(urllib.parse.parse_qsl(request.url.query.decode())))


def test_a_wait_that_times_out_asks_the_service_to_wait_instead_of_polling(url, name):
    with streampca.Client(url, timeout=2.5) as c:
        c.create_model(name, 8, 2)
        c.ingest(name, np.random.default_rng(0).standard_normal((3, 8)))  # never fits
        seen = Recorder(c)
        t = time.monotonic()
        with pytest.raises(streampca.FitTimeoutError, match="3 samples for 2 components"):
            c.wait_until_fitted(name, 2.0, poll=0.05)
        elapsed = time.monotonic() - t
    # One plain status request for the target, then waits of at most 1.5 s (a second
    # under the client's 2.5 s timeout) covering the 2 s: not ~40 polls every 50 ms.
    assert seen.queries[0] == {}
    waits = seen.queries[1:]
    assert 2 <= len(waits) <= 4, seen.queries
    assert all(q["fitted_sequence"] == "1" for q in waits)
    asked = [float(q["wait"]) for q in waits]
    assert asked[0] == pytest.approx(1.5) and all(0 < w <= 1.5 for w in asked)
    assert sum(asked) == pytest.approx(2.0, abs=0.1)
    assert 1.9 < elapsed < 4.0


def test_a_wait_returns_the_fit_covering_the_sequence(url, name):
    X = spiked(3000, 12, seed=3)
    with streampca.Client(url) as c:
        c.create_model(name, 12, 3)
        last = c.ingest(name, X, batch_size=300).sequence
        seen = Recorder(c)
        st = c.wait_until_fitted(name, 60, sequence=last)
        waits = list(seen.queries)
        assert st.fitted and st.fitted_sequence >= last
        assert c.components(name).samples == 3000.0
    # Given the sequence, no plain status request: only waits for it.
    assert waits and all(q["fitted_sequence"] == str(last) for q in waits)


def test_async_client_waits_on_the_service_too(url, name):
    async def run() -> None:
        async with streampca.AsyncClient(url, timeout=2.5) as c:
            await c.create_model(name, 8, 2)
            await c.ingest(name, np.random.default_rng(1).standard_normal((3, 8)))
            queries: List[dict] = []

            async def record(request: httpx.Request) -> None:
                queries.append(dict(urllib.parse.parse_qsl(request.url.query.decode())))

            c._http.event_hooks["request"].append(record)
            with pytest.raises(streampca.FitTimeoutError):
                await c.wait_until_fitted(name, 1.0, poll=0.05)
            assert [q.get("wait") for q in queries[1:]] == [repr(float(queries[1]["wait"]))]
            assert float(queries[1]["wait"]) == pytest.approx(1.0, abs=0.05)

    asyncio.run(run())


# --- services without the wait --------------------------------------------------------


class Scripted:
    """A status endpoint: ``refuse`` answers 400 ``invalid_parameter`` to the wait's
    parameters (as cluster mode does); otherwise they are ignored (answered at once).
    The status is fitted from the ``fit_after``-th request on."""

    def __init__(self, refuse: bool, fit_after: int) -> None:
        self.refuse, self.fit_after = refuse, fit_after
        self.queries: List[str] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                script.queries.append(query)
                if query and script.refuse:
                    code, body = 400, {
                        "error": {"code": "invalid_parameter", "message": "query: cluster mode"}
                    }
                else:
                    fitted = len(script.queries) >= script.fit_after
                    code, body = 200, status(3 if fitted else 0, fitted)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator:
    made: List[Scripted] = []

    def make(refuse: bool, fit_after: int) -> Scripted:
        made.append(Scripted(refuse, fit_after))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_a_service_that_refuses_the_wait_is_polled(scripted):
    s = scripted(refuse=True, fit_after=5)
    with streampca.Client(s.url) as c:
        st = c.wait_until_fitted("m", 10, poll=0.01)
    assert st.fitted and st.fitted_sequence == 3
    # The plain status, one refused wait, then plain polls until the fit.
    assert s.queries[0] == "" and "fitted_sequence=3" in s.queries[1]
    assert s.queries[2:] == [""] * 3


def test_a_service_that_ignores_the_wait_is_asked_again_after_a_backoff(scripted):
    s = scripted(refuse=False, fit_after=6)
    with streampca.Client(s.url) as c:
        t = time.monotonic()
        st = c.wait_until_fitted("m", 10, poll=0.05)
        elapsed = time.monotonic() - t
    assert st.fitted and len(s.queries) == 6
    assert all("wait=" in q for q in s.queries[1:])
    # Four early answers, each followed by a sleep of 2, 3, 4.5 and 6.75 ms (the
    # polling backoff), not a busy loop.
    assert elapsed >= 0.002 + 0.003 + 0.0045 + 0.00675
