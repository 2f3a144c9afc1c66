"""One keep-alive connection (the standard library's ``http.client``) that posts the
background sender's ``.npy`` bodies.

Why not the client's ``httpx`` pool: httpcore writes a request body by
``sock.send(buffer); buffer = buffer[n:]``, which copies the rest of every body chunk
after each partial send, and h11 joins each chunk into a new ``bytes``. For a 1.6 MB
body (256 rows of 784 float64) that cost the client 6.6–8.7 µs of CPU per row here,
against 3.0–3.7 µs with ``http.client``, whose ``send`` hands the array's memory to
``socket.sendall`` (measured in one run each way, alternating, load ~9).

The retry rules and error mapping stay the client's (:meth:`Client._send`): one attempt
here returns an ``httpx.Response`` or raises an ``httpx`` transport error of the same
kind httpx would (``ConnectError`` when nothing was sent, so the rows may be sent again;
a read/write error after that, so they may have been applied).
"""

from __future__ import annotations

import http.client
import select
import socket
import urllib.parse
from typing import Iterator, Optional

import httpx
import numpy as np

from . import _ops
from ._wire import NPY, npy_bytes
from .client import Client, _shared_ssl_context

__all__ = ["NpyBody", "NpyPoster"]


class NpyBody:
    """A ``.npy`` request body read straight from ``a``'s memory (a 2-D float32 or
    float64 array, rows × values): the ``.npy`` prefix and the values, never joined into
    one ``bytes`` (that cost ~3 ms of fresh pages per 256 × 784 float64 batch here).
    Re-readable, so a request can be sent again after a 503."""

    def __init__(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        # The .npy prefix npy_bytes writes before the values: the same header with the
        # row count of ``a`` (one row's encoding tells the header; its values are cut).
        one = npy_bytes(a[:1])
        header = one[: len(one) - a[:1].nbytes].decode("latin1")
        text = header[10:].rstrip(" \n").replace("(1, ", f"({a.shape[0]}, ", 1)
        pad = -(10 + len(text) + 1) % 64
        text = (text + " " * pad + "\n").encode("latin1")
        #: The magic string, version, header length and header.
        self.prefix = one[:8] + len(text).to_bytes(2, "little") + text
        #: The values, little-endian, C order (no copy of ``a`` when it already is).
        self.data = memoryview(a).cast("B")
        #: Bytes in all.
        self.size = len(self.prefix) + self.data.nbytes

    def parts(self) -> Iterator[memoryview]:
        yield memoryview(self.prefix)
        yield self.data


class NpyPoster:
    """Posts :class:`NpyBody` requests for ``client`` (its URL, headers, timeout and
    retry rules) over one persistent connection of its own. Not thread-safe: one per
    sender thread."""

    def __init__(self, client: Client) -> None:
        self._client = client
        u = urllib.parse.urlsplit(client.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"cannot post to {client.url!r}: not an http(s) URL")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._base = u.path.rstrip("/")
        self._conn: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        """Closes the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # An idle connection that is readable was closed by the service (or holds
            # bytes nobody asked for): start a new one, as httpx's pool does.
            if select.select([conn.sock], [], [], 0)[0]:
                self.close()
                conn = None
        if conn is None:
            timeout = self._client.timeout
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=_shared_ssl_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._conn = conn
        if conn.sock is None:
            try:
                conn.connect()
            except socket.timeout as e:
                self.close()
                raise httpx.ConnectTimeout(str(e) or "connect timed out") from e
            except OSError as e:
                self.close()
                raise httpx.ConnectError(str(e) or type(e).__name__) from e
        return conn

    def _attempt(self, call: _ops.Call) -> httpx.Response:
        body = call.content
        assert isinstance(body, NpyBody)
        conn = self._connection()
        try:
            conn.putrequest("POST", self._base + call.path, skip_accept_encoding=True)
            for k, v in self._client._headers.items():
                conn.putheader(k, v)
            conn.putheader("content-type", NPY)
            conn.putheader("content-length", str(body.size))
            conn.endheaders()
            written = True
            try:
                for part in body.parts():
                    conn.send(part)
            except OSError:
                # The service may answer (a 404, a 413) and close before reading the
                # whole body: read that answer, as httpcore does (if none comes, the
                # read fails below and the request may have been applied).
                written = False
            r = conn.getresponse()
            content = r.read()
        except socket.timeout as e:
            self.close()
            raise httpx.ReadTimeout(str(e) or "timed out") from e
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise httpx.RemoteProtocolError(f"{type(e).__name__}: {e}") from e
        if r.will_close or not written:
            self.close()
        return httpx.Response(r.status, headers=r.getheaders(), content=content)

    def post(self, path: str, body: NpyBody) -> httpx.Response:
        """``POST path`` (under the client's URL) with ``body``, a request that must not
        be repeated once it may have been applied; retried as :meth:`Client._send`
        retries (503, connection refused). Raises the client's errors."""
        call = _ops.Call(
            "POST",
            path,
            content=body,  # type: ignore[arg-type]
            headers={"content-type": NPY},
            idempotent=False,
        )
        return self._client._send(call, self._attempt)
