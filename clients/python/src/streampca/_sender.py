"""Background sending of ``StreamPCA.partial_fit``'s rows.

:class:`Sender` runs ``max_in_flight`` daemon threads, each with its own connection
(:class:`streampca.Client`), that post batches of rows to one served model. At most
``max_in_flight`` batches are queued or in flight: :meth:`Sender.submit` blocks until
one finishes, so memory stays bounded. Every batch is exactly one ``POST /samples``
request (the caller never submits more than the service's body limit), so a failed batch
is either not applied at all or, after a transport failure, possibly applied; the
second kind is never sent again (no idempotency key exists to make that safe).

The threads hold no reference to the estimator, so it can be garbage collected while
they run; its finalizer calls :meth:`Sender.close`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import httpx
import numpy as np

from . import _ops
from ._errors import ApiError, StreamPCAError
from ._post import NpyBody, NpyPoster
from .client import Client

__all__ = ["SendError", "Sender", "Batch"]


@dataclass
class Batch:
    """Rows ``start`` to ``stop − 1`` of the estimator's ``partial_fit`` stream (counted
    from 0 since its served model was created), as an owned ``(stop − start) ×
    n_features`` array."""

    start: int
    stop: int
    X: np.ndarray
    error: Optional[BaseException] = None
    #: True when the request may have been applied (the connection failed after it was
    #: sent, or the service failed in a way that does not say): never sent again.
    unknown: bool = False


def _not_applied(e: BaseException) -> bool:
    """Whether a failed ingest certainly changed nothing on the service: it answered
    4xx (the API's rule: bad input changes nothing) or 503 ``overloaded`` (refused
    before reading), or the request never left (local validation, refused
    connection)."""
    if isinstance(e, ApiError):
        return e.status < 500 or e.code == "overloaded"
    if isinstance(e, (ValueError, TypeError)):
        return True
    return isinstance(e.__cause__, httpx.ConnectError)


def _ranges(batches: List[Batch]) -> str:
    return ", ".join(f"{b.start}–{b.stop - 1}" for b in batches)


class SendError(StreamPCAError):
    """A background send of ``StreamPCA.partial_fit``'s rows failed.

    Rows are numbered in the order ``partial_fit`` (or ``fit``) took them since the
    estimator's served model was created, the first being row 0.

    Attributes:
        kept: ``(start, stop)`` row ranges the service did not apply; the estimator keeps
            them and :meth:`StreamPCA.flush` (or reading a fitted attribute) sends them
            again.
        unknown: ``(start, stop)`` row ranges whose request may or may not have been
            applied (the connection failed after it was sent); they are not sent again,
            so that no row is counted twice.
        errors: the underlying exceptions, one per failed batch (the first is also
            ``__cause__``).
    """

    def __init__(self, failed: List[Batch], when: str, keep: bool = True) -> None:
        kept = [b for b in failed if not b.unknown]
        unknown = [b for b in failed if b.unknown]
        self.kept: List[Tuple[int, int]] = [(b.start, b.stop) for b in kept] if keep else []
        #: ``(start, stop)`` ranges the service did not apply and that were dropped
        #: (``close``): they are in no fit.
        self.dropped: List[Tuple[int, int]] = [] if keep else [(b.start, b.stop) for b in kept]
        self.unknown: List[Tuple[int, int]] = [(b.start, b.stop) for b in unknown]
        self.errors: List[BaseException] = [b.error for b in failed if b.error is not None]
        parts = []
        if kept and keep:
            parts.append(
                f"rows {_ranges(kept)} were not applied by the service and are kept: "
                "flush() sends them again, fit() starts over"
            )
        elif kept:
            parts.append(f"rows {_ranges(kept)} were not applied by the service")
        if unknown:
            parts.append(
                f"rows {_ranges(unknown)} may or may not have been applied (the request "
                "failed after it was sent) and are not sent again, so none is counted twice"
            )
        first = self.errors[0] if self.errors else None
        cause = f"{type(first).__name__}: {first}" if first is not None else "unknown error"
        super().__init__(
            f"a background send of partial_fit rows failed ({cause}); "
            + "; ".join(parts)
            + (f". {when}" if when else "")
        )


class Sender:
    """Posts batches of rows to the served model ``model`` from ``threads`` daemon
    threads, at most ``threads`` batches queued or in flight."""

    def __init__(
        self, url: Optional[str], api_key: Optional[str], model: str, threads: int
    ) -> None:
        self.model = model
        self._cv = threading.Condition()
        self._queue: List[Optional[Batch]] = []
        self._pending = 0  # batches submitted and not finished
        self._failed: List[Batch] = []
        self._limit = max(1, int(threads))
        #: Highest sequence number the service returned, -1 before any.
        self.sequence = -1
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(url, api_key),
                name=f"streampca-sender-{model}-{i}",
                daemon=True,
            )
            for i in range(self._limit)
        ]
        for t in self._threads:
            t.start()

    def _work(self, url: Optional[str], api_key: Optional[str]) -> None:
        client = Client(url=url, api_key=api_key)
        poster = NpyPoster(client)
        path = _ops._path(self.model, "/samples")
        try:
            while True:
                with self._cv:
                    while not self._queue:
                        self._cv.wait()
                    batch = self._queue.pop(0)
                if batch is None:
                    return
                seq = None
                try:
                    # Exactly one request (the estimator validated the rows).
                    seq = int(poster.post(path, NpyBody(batch.X)).json()["sequence"])
                except BaseException as e:  # noqa: BLE001 - reported to the estimator
                    batch.error = e
                    batch.unknown = not _not_applied(e)
                with self._cv:
                    if batch.error is not None:
                        self._failed.append(batch)
                    elif seq is not None:
                        self.sequence = max(self.sequence, seq)
                    self._pending -= 1
                    self._cv.notify_all()
        finally:
            poster.close()
            client.close()

    def submit(self, batch: Batch) -> None:
        """Queues ``batch`` (which the sender then owns), first waiting while
        ``threads`` batches are queued or in flight."""
        with self._cv:
            if self._closed:
                raise RuntimeError("sender closed")
            while self._pending >= self._limit:
                self._cv.wait()
            self._pending += 1
            self._queue.append(batch)
            self._cv.notify_all()

    def wait(self) -> None:
        """Blocks until every submitted batch has finished (sent or failed)."""
        with self._cv:
            while self._pending:
                self._cv.wait()

    def take_failed(self) -> List[Batch]:
        """The batches that failed since the last call, in row order."""
        with self._cv:
            failed, self._failed = self._failed, []
        return sorted(failed, key=lambda b: b.start)

    def close(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stops the threads: with ``wait``, after every queued batch is sent; without,
        queued batches are dropped (the ones in flight finish). Joins the threads (up
        to ``timeout`` seconds each) unless called from one of them."""
        with self._cv:
            if not wait:
                dropped = [b for b in self._queue if b is not None]
                self._queue = [b for b in self._queue if b is None]
                self._pending -= len(dropped)
            if not self._closed:
                self._closed = True
                self._queue.extend([None] * len(self._threads))
            self._cv.notify_all()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(timeout)

    def alive(self) -> bool:
        """Whether any of the threads is still running."""
        return any(t.is_alive() for t in self._threads)


def close_sender(sender: Any) -> None:
    """Finalizer of an estimator: stop its sender without waiting for queued rows."""
    sender.close(wait=False, timeout=10.0)
