"""How ``StreamPCA``'s rows reach its served model: :class:`IngestMixin`.

``partial_fit`` hands its checked rows to :meth:`IngestMixin._ingest`, which

- adds them to ``var_``'s running per-feature statistics (count, mean, sum of squared
  deviations; the service does not report per-feature variances),
- and sends them: at once from the calling thread (a named model, or one with
  ``half_life``), coalesced in a client-side buffer of up to ``buffer_bytes``, or by the
  background :class:`~streampca._sender.Sender` threads (``max_in_flight`` > 0), keeping
  the rows of a failed background send that the service did not apply until
  ``flush`` sends them again.

The state lives in the estimator's ``__dict__`` (``_buf``, ``_buf_rows``, ``_buf_start``,
``_rows``, ``_sender``, ``_sender_fin``, ``_kept``, ``_stats``, ``_scratch``, ``_sent``),
so pickling and ``clone`` see the estimator as before; its user-facing documentation is
on :class:`streampca.sklearn.StreamPCA` (``buffer_bytes``, ``max_in_flight``, ``flush``).
"""

from __future__ import annotations

import weakref
from typing import Optional

import numpy as np

from ._sender import Batch, Sender, SendError, close_sender

__all__ = ["IngestMixin"]

#: Bytes of values per ingest request (the service's default body limit is 64 MiB).
_MAX_REQUEST_BYTES = 32 << 20
#: Values per block of ``var_``'s deviation sums (a 2 MiB float64 scratch buffer).
_STATS_BLOCK = 1 << 18


class IngestMixin:
    """``StreamPCA``'s statistics, buffering and sending of the rows ``partial_fit``
    takes. The estimator provides the parameters ``url``, ``api_key``, ``model``,
    ``half_life``, ``buffer_bytes`` and ``max_in_flight``, the served model's name
    ``_model``, ``n_samples_seen_``, ``_service()`` (its :class:`streampca.Client`),
    ``_count(samples)`` (the service's sample count as ``n_samples_seen_`` holds it) and
    ``flush()`` (which calls :meth:`_send_buffered`)."""

    def _buffering(self) -> bool:
        """Rows are coalesced client-side only for an estimator-owned model without
        forgetting: the service's exact accumulator gives the same fit however the rows
        are batched, and no one else reads that model."""
        return self.buffer_bytes > 0 and self.model is None and self.half_life is None

    def _background(self) -> bool:
        """Rows are sent by background threads (``max_in_flight`` > 0) under the same
        conditions as buffering: only this estimator reads the model, and the order of
        the rows does not change the exact accumulator's fit."""
        return self.max_in_flight > 0 and self.model is None and self.half_life is None

    def _ingest(self, X: np.ndarray, colsum: Optional[np.ndarray] = None) -> None:
        self._update_stats(X, colsum)
        self._stale = True
        start = self.__dict__.get("_rows", 0)
        self._rows = start + X.shape[0]
        if self._background():
            self._ingest_background(X, start)
            return
        if not self._buffering():
            self.flush()  # rows left from before set_params(buffer_bytes=0)
            self._send(X)
            return
        buf = self.__dict__.get("_buf")
        if buf is not None and buf.dtype != X.dtype:
            self.flush()
            buf = None
        if buf is None:
            cap = max(1, self.buffer_bytes // (X.shape[1] * X.itemsize))
            buf = self._buf = np.empty((cap, X.shape[1]), dtype=X.dtype)
            self._buf_rows = 0
        n, used = X.shape[0], self._buf_rows
        if used + n > buf.shape[0]:
            self.flush()
            used = 0
            if n >= buf.shape[0]:
                self._send(X)
                return
        # A copy: the caller may change X after partial_fit returns.
        buf[used : used + n] = X
        self._buf_rows = used + n
        self.n_samples_seen_ += n

    # --- background sending (max_in_flight > 0) ---------------------------------------

    def _sender_for(self) -> Sender:
        s = self.__dict__.get("_sender")
        if s is None:
            s = self._sender = Sender(self.url, self.api_key, self._model, self.max_in_flight)
            # The threads hold no reference to the estimator: they stop when it is
            # collected (rows still queued then are dropped, as the model is deleted).
            self._sender_fin = weakref.finalize(self, close_sender, s)
        return s

    def _stop_sender(self, drain: bool) -> None:
        """Stops and joins the sender threads (after the queued rows, with ``drain``)."""
        fin = self.__dict__.pop("_sender_fin", None)
        if fin is not None:
            fin.detach()
        s = self.__dict__.pop("_sender", None)
        if s is not None:
            s.close(wait=drain)

    def _submit_buffer(self) -> None:
        rows = self.__dict__.get("_buf_rows", 0)
        if not rows:
            return
        start = self.__dict__.get("_buf_start", self.__dict__.get("_rows", rows) - rows)
        batch = Batch(start, start + rows, self._buf[:rows])
        # The array now belongs to the sender: the next rows go to a fresh buffer.
        self.__dict__.pop("_buf")
        self._buf_rows = 0
        self._sender_for().submit(batch)

    def _ingest_background(self, X: np.ndarray, start: int) -> None:
        n, width = X.shape
        self.n_samples_seen_ += n
        buf = self.__dict__.get("_buf")
        if buf is not None and buf.dtype != X.dtype:
            self._submit_buffer()
            buf = None
        cap = max(1, self.buffer_bytes // (width * X.itemsize))
        used = self.__dict__.get("_buf_rows", 0) if buf is not None else 0
        if used + n > cap:
            self._submit_buffer()
            buf, used = None, 0
        s = self._sender_for()
        if n >= cap:
            # One request per call (split at the service's body limit), of a copy: the
            # caller may change X after partial_fit returns.
            step = max(1, _MAX_REQUEST_BYTES // (width * X.itemsize))
            for a in range(0, n, step):
                b = min(n, a + step)
                s.submit(Batch(start + a, start + b, np.array(X[a:b], order="C")))
            return
        if buf is None:
            buf = self._buf = np.empty((cap, width), dtype=X.dtype)
            self._buf_start = start
        buf[used : used + n] = X
        self._buf_rows = used + n
        if used + n == cap:
            self._submit_buffer()

    def _check_sends(self, when: str, keep: bool = True) -> None:
        """Raises :class:`SendError` for background sends that failed since the last
        check, or (``partial_fit``) while rows of a failed send are kept unsent."""
        s = self.__dict__.get("_sender")
        failed = s.take_failed() if s is not None else []
        kept = self.__dict__.get("_kept", [])
        if failed:
            self._kept = sorted(kept + [b for b in failed if not b.unknown], key=lambda b: b.start)
            raise SendError(failed, when, keep=keep) from failed[0].error
        if kept:
            raise SendError(kept, when, keep=keep) from kept[0].error

    def _flush_background(self, keep: bool = True) -> None:
        s = self._sender_for()
        self._submit_buffer()
        for b in self.__dict__.pop("_kept", []):
            b.error, b.unknown = None, False
            s.submit(b)
        s.wait()
        if s.sequence >= 0:
            self._sent = max(s.sequence, self.__dict__.get("_sent") or -1)
        when = "" if keep else "close() deleted the served model: no row is kept"
        self._check_sends(when, keep=keep)

    def _send_buffered(self) -> None:
        """``flush``: sends the buffered rows and waits for every background send."""
        if "_model" in self.__dict__ and (
            "_sender" in self.__dict__ or self.__dict__.get("_kept") or self._background()
        ):
            self._flush_background()
            return
        rows = self.__dict__.get("_buf_rows", 0)
        if rows:
            self._send(self._buf[:rows])  # on failure the rows stay buffered
            self._buf_rows = 0

    def _send(self, X: np.ndarray) -> None:
        c = self._service()
        rows = max(1, _MAX_REQUEST_BYTES // (X.shape[1] * X.itemsize))
        r = c.ingest(self._model, X, batch_size=rows)
        self.n_samples_seen_ = self._count(r.samples)
        self._sent = max(r.sequence, self.__dict__.get("_sent") or -1)

    def _update_stats(self, X: np.ndarray, colsum: Optional[np.ndarray] = None) -> None:
        """Per-feature count, mean and sum of squared deviations of the rows sent
        (Chan et al.'s merge, float64), for ``var_``. ``colsum``: ``X``'s float64 column
        sums if already computed. The deviations are formed block by block in a scratch
        buffer kept by the estimator (at most ``_STATS_BLOCK`` values), not in fresh
        temporaries the size of ``X``."""
        nb, d = X.shape
        if colsum is None:
            colsum = X.sum(axis=0, dtype=np.float64)
        mb = colsum / nb
        step = max(1, _STATS_BLOCK // max(d, 1))
        scratch = self.__dict__.get("_scratch")
        if scratch is None or scratch.shape[1] != d:
            scratch = self._scratch = np.empty((step, d), dtype=np.float64)
        m2b = np.zeros(d, dtype=np.float64)
        for a in range(0, nb, step):
            D = scratch[: min(nb, a + step) - a]
            np.subtract(X[a : a + step], mb, out=D)
            m2b += np.einsum("ij,ij->j", D, D)
        stats = self.__dict__.get("_stats")
        if stats is None:
            self._stats = (nb, mb, m2b)
            return
        n, mean, m2 = stats
        total = n + nb
        delta = mb - mean
        self._stats = (
            total,
            mean + delta * (nb / total),
            m2 + m2b + delta**2 * (n * nb / total),
        )
