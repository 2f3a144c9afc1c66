"""``StreamPCA``: a scikit-learn estimator backed by a streampca service.

It behaves like :class:`sklearn.decomposition.IncrementalPCA` wherever a served model
can: ``fit`` starts a fresh model on the service and sends the rows in batches,
``partial_fit`` appends a batch, and the fitted attributes (``components_``,
``explained_variance_``, …) are the service's fit, which is the *exact* PCA of every row
sent (to the ``tolerance`` in radians), not an incremental approximation.
``transform``, ``inverse_transform``, ``get_covariance``, ``get_precision`` and
``score_samples`` are computed locally from the fitted attributes, with scikit-learn's
formulas, so they need no round trip.

Model lifecycle on the service
------------------------------
- ``model=None`` (default): the estimator creates a model named ``sklearn-<random>``
  and owns it. ``fit`` deletes the previous one and creates a new one. The model is
  deleted when the estimator is closed (:meth:`StreamPCA.close`, or ``with``), garbage
  collected, or when the interpreter exits — so a notebook that fits a hundred
  estimators leaves none behind (a process killed with SIGKILL does; list
  ``sklearn-*`` models with :class:`streampca.Client` to clean up).
- ``model="name"``: a model you name and keep. ``fit`` replaces it with a fresh one;
  ``partial_fit`` appends to it, creating it if absent, so a later process can go on
  where an earlier one stopped (its dimension, components, ``half_life`` and
  ``tolerance`` must agree). The estimator never deletes it otherwise.
- An estimator-owned model's rows are coalesced into requests of up to
  ``buffer_bytes`` (1 MiB): the service's exact accumulator fits the same components
  however the rows are batched, so ``partial_fit`` in small batches costs few requests.
  Fitted attributes, ``flush``, ``close``, ``fit`` and pickling send what is buffered.
  The requests go out from ``max_in_flight`` background threads (see the parameter), so
  ``partial_fit`` returns while the service folds earlier rows.
  A named model (and one with ``half_life``) gets every ``partial_fit`` at once, in
  order, from the calling thread.
- A copy (``pickle``, ``copy.deepcopy``) keeps the fitted attributes and works offline.
  Its first ``partial_fit`` forks the served model into a new owned one (snapshot export
  and import), so the copy and the original grow independently, as copies of
  IncrementalPCA do.
- ``clone`` copies parameters only; two clones with the same ``model=`` name share (and
  ``fit`` replaces) one served model, so give parallel clones ``model=None``.

Conventions (scikit-learn's)
----------------------------
- Divisors: ``explained_variance_`` and ``get_covariance`` use N − 1 (sample
  covariance), ``var_`` uses N, as scikit-learn does; ``singular_values_`` are
  ``sqrt(explained_variance_ · (N − 1))``; ``noise_variance_`` is the mean variance of
  the discarded directions, ``(total − Σ explained_variance_) / (min(n_features, N) −
  n_components_)``, as in :class:`sklearn.decomposition.PCA`.
- Signs: each component's largest-magnitude entry is positive (``svd_flip`` with
  ``u_based_decision=False``).
- ``n_components=None`` keeps ``min(n_samples of the first batch, n_features)``
  components, and ``batch_size=None`` means ``5 · n_features`` rows per request, as
  IncrementalPCA does. The service needs ``min(n_components_ + 4, n_features) + 1``
  samples before it fits; ``fit`` with fewer raises ``ValueError``.
- float32 input gives float32 attributes and outputs (the service computes in float64).
- ``var_`` is computed here, from the rows this estimator sent (the service does not
  report per-feature variances).

Monitoring (an addition; scikit-learn's methods keep their meaning)
-------------------------------------------------------------------
``score_samples``/``score`` stay the probabilistic-PCA log-likelihood. The service's
monitoring statistics are a separate method, :meth:`StreamPCA.monitor`: each row's
Hotelling's T² on the ``n_components_`` components and its squared prediction error
(SPE), and with ``alpha`` the fit's exact control limits and each row's outlier flags.
The estimator always fits the covariance (never ``standardize``); a named model created
with ``standardize=True`` is refused.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np
from scipy import linalg, sparse
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import gen_batches
from sklearn.utils.validation import check_array, check_is_fitted

from ._errors import NotFoundError
from ._fitted import fitted_attributes
from ._ingest import IngestMixin
from ._lifecycle import delete_now, own, shared_client
from ._params import validate_params
from ._sender import SendError
from ._types import Projection
from .client import Client

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["StreamPCA"]

#: Guard columns the service's optimiser carries beside the components: it fits once it
#: has ``min(components + 4, dim) + 1`` samples.
_SERVER_GUARD_COLUMNS = 4
_FITTED = (
    "components_",
    "explained_variance_",
    "explained_variance_ratio_",
    "singular_values_",
    "mean_",
    "var_",
    "noise_variance_",
)


def _validate_data(est: BaseEstimator, X: Any, **kw: Any) -> Any:
    if _sk_validate_data is not None:
        return _sk_validate_data(est, X, **kw)
    return est._validate_data(X, **kw)  # pragma: no cover - older scikit-learn


class StreamPCA(IngestMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Principal component analysis fitted by a streampca service.

    Parameters:
        n_components: components to keep; ``None``: ``min(n_samples of the first
            batch, n_features)``.
        whiten: divide ``transform``'s scores by √``explained_variance_``.
        copy: accepted for IncrementalPCA compatibility; the input is never modified.
        batch_size: rows per request in ``fit``; ``None``: ``5 · n_features``.
        url, api_key: the service (defaults: ``STREAMPCA_URL`` / ``STREAMPCA_API_KEY``,
            then ``http://127.0.0.1:8080``).
        model: a served model's name to fit and keep (see the module's lifecycle
            notes); ``None``: an estimator-owned model, deleted with the estimator.
        half_life: forgetting half-life in samples (``None``: keep every sample); with
            it, ``n_samples_seen_`` is the weighted count.
        tolerance: the service's convergence tolerance on every component, radians.
        fit_timeout: seconds to wait for the service's fit.
        buffer_bytes: with an estimator-owned model and no ``half_life``,
            ``partial_fit`` (and ``fit``) coalesce rows into requests of up to this many
            bytes (0: one request per call; a call larger than this is sent as it is).
            The default, 1 MiB, spares small calls most of their per-request cost; larger
            requests do not pay off (the service's ingest costs more per row in batches
            of thousands of rows than of hundreds). The service's exact accumulator fits the
            same components however rows are batched, so only the number of requests
            changes.
        max_in_flight: with an estimator-owned model and no ``half_life``, requests
            (full buffers, or calls larger than ``buffer_bytes``) are sent by this many
            background daemon threads, each with its own connection, so ``partial_fit``
            only validates, updates ``var_``'s sums and copies its rows; at most this many
            requests are queued or in flight (``partial_fit`` waits beyond that), so the
            rows held are at most ``max_in_flight`` requests plus one buffer. The service
            may apply concurrent requests in any order, which its exact accumulator does
            not notice. Reading a fitted attribute, ``transform``, :meth:`flush`,
            :meth:`close`, ``fit`` and pickling wait for every request. A failed request
            raises :class:`streampca.SendError` at the next ``partial_fit``,
            :meth:`flush`, attribute read, pickling or :meth:`close`, naming its rows
            (numbered from 0 in the order ``partial_fit`` took them): rows the service did
            not apply (it answered 4xx or 503 ``overloaded``) are kept and :meth:`flush`
            sends them again (``partial_fit`` takes no new rows until then; ``fit``
            starts over); rows whose request failed after it was sent may have been
            applied and are never sent again (no row is counted twice; the error lists
            them, and ``n_samples_seen_`` is re-read from the service, though ``var_``
            still includes them). The threads stop on :meth:`close`, ``fit`` and when
            the estimator is collected. 0: every request is sent from the calling
            thread before ``partial_fit`` returns (its error raised there). The
            default, 4, keeps both partitions of a two-core service folding while the
            next requests travel: on two cores shared with the client, 60 000
            Fashion-MNIST rows went 1.12–1.24× faster than with 2 (``bench/RESULTS.md``).

    Attributes are those of IncrementalPCA: ``components_`` (n_components_ ×
    n_features), ``explained_variance_``, ``explained_variance_ratio_``,
    ``singular_values_``, ``mean_``, ``var_``, ``noise_variance_``, ``n_components_``,
    ``n_samples_seen_``, ``n_features_in_``, ``feature_names_in_``, ``batch_size_``.
    After ``partial_fit`` they are fetched from the service on first use (waiting for
    the fit that covers every batch sent), so a stream of ``partial_fit`` calls is not
    slowed down by fits it does not look at.
    """

    def __init__(
        self,
        n_components: Optional[int] = None,
        *,
        whiten: bool = False,
        copy: bool = True,
        batch_size: Optional[int] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        model: Optional[str] = None,
        half_life: Optional[float] = None,
        tolerance: float = 1e-6,
        fit_timeout: float = 300.0,
        buffer_bytes: int = 1 << 20,
        max_in_flight: int = 4,
    ) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.copy = copy
        self.batch_size = batch_size
        self.url = url
        self.api_key = api_key
        self.model = model
        self.half_life = half_life
        self.tolerance = tolerance
        self.fit_timeout = fit_timeout
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight

    # --- parameters -------------------------------------------------------------------

    def _validate_params(self) -> None:
        validate_params(self)

    # --- the served model -------------------------------------------------------------

    def _service(self) -> Client:
        return shared_client(self.url, self.api_key)

    def _drop_model(self) -> None:
        """Forgets the served model (deleting it if owned) and the fitted state."""
        self._stop_sender(drain=False)
        fin = self.__dict__.pop("_finalizer", None)
        name = self.__dict__.pop("_model", None)
        if fin is not None and fin.alive:
            fin.detach()
            delete_now(name, self.url, self.api_key, self._service())
        for attr in (
            "_cache", "_stale", "_sent", "_stats", "_dtype", "_fork_from", "_closed",
            "_buf", "_buf_rows", "_served", "_kept", "_rows", "_buf_start", "_scratch",
        ):
            self.__dict__.pop(attr, None)
        for attr in ("n_components_", "n_samples_seen_"):
            self.__dict__.pop(attr, None)

    def close(self) -> None:
        """Deletes the estimator-owned served model now (a named model is kept). The
        fitted attributes stay usable; ``partial_fit`` then needs a new ``fit``.

        Waits for the rows sent in the background first; if a send failed, raises
        :class:`streampca.SendError` naming the rows that were not applied (after
        deleting the model and stopping the sender threads)."""
        failed: Optional[SendError] = None
        if "_sender" in self.__dict__ or self.__dict__.get("_kept"):
            try:
                self._flush_background(keep=False)
            except SendError as e:
                failed = e
        if self.__dict__.get("_stale") and failed is None:
            try:
                self._sync()
            except Exception:  # noqa: BLE001 - closing must not fail on a missing fit
                pass
        fin = self.__dict__.pop("_finalizer", None)
        owned = fin is not None and fin.alive
        if owned:
            fin.detach()
            delete_now(self._model, self.url, self.api_key, self._service())
        if "_model" in self.__dict__ or "_fork_from" in self.__dict__:
            self.__dict__.pop("_model", None)
            self.__dict__.pop("_fork_from", None)
            # A named model stays on the service: a later partial_fit attaches again.
            if owned:
                self._closed = True
        self._stop_sender(drain=False)
        self.__dict__.pop("_kept", None)
        if failed is not None:
            raise failed

    def __enter__(self) -> "StreamPCA":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _own(self, name: str) -> None:
        self._finalizer = own(self, name, self.url, self.api_key)

    def _create(self, name: str, n_features: int, p: int, owned: bool) -> None:
        self._service().create_model(
            name, n_features, p, half_life=self.half_life, tolerance=self.tolerance
        )
        if owned:
            self._own(name)
        self._model = name
        self.n_components_ = p
        self.n_samples_seen_ = 0

    def _open(self, n_samples: int, n_features: int) -> None:
        """First ``partial_fit``: choose ``n_components_`` as IncrementalPCA does, then
        create (or, with ``model=``, attach to) the served model."""
        if self.model is not None:
            try:
                st = self._service().get_model(self.model)
            except NotFoundError:
                st = None
            if st is not None:
                self._attach(st, n_features)
                return
        if self.n_components is None:
            p = min(n_samples, n_features)
        elif not self.n_components <= n_features:
            raise ValueError(
                "n_components=%r invalid for n_features=%d, need more rows than columns "
                "for IncrementalPCA processing" % (self.n_components, n_features)
            )
        elif self.n_components > n_samples:
            raise ValueError(
                f"n_components={self.n_components} must be less or equal to the batch "
                f"number of samples {n_samples} for the first partial_fit call."
            )
        else:
            p = self.n_components
        if self.model is not None:
            self._create(self.model, n_features, p, owned=False)
        else:
            self._create(f"sklearn-{uuid.uuid4().hex[:24]}", n_features, p, owned=True)

    def _attach(self, st: Any, n_features: int) -> None:
        problems = []
        if st.dim != n_features:
            problems.append(f"dim {st.dim} (X has {n_features} features)")
        if st.target_dim is not None:
            problems.append(f"target_dim {st.target_dim} (a regression model)")
        if self.n_components is not None and st.components != self.n_components:
            problems.append(f"components {st.components} (n_components={self.n_components})")
        if st.half_life != self.half_life:
            problems.append(f"half_life {st.half_life} (half_life={self.half_life})")
        if st.tolerance is not None and st.tolerance != self.tolerance:
            problems.append(f"tolerance {st.tolerance} (tolerance={self.tolerance})")
        if st.standardize:
            problems.append("standardize true (a PCA of the correlation matrix, not PCA)")
        if problems:
            raise ValueError(
                f"served model {st.name!r} does not match this estimator: it has "
                + "; ".join(problems)
                + ". Match the parameters, or call fit() to replace the model."
            )
        self._model = st.name
        self.n_components_ = st.components
        self.n_samples_seen_ = self._count(st.samples)
        self._sent = st.sequence
        self._stale = True

    def _fork(self, source: str) -> None:
        """A copy's first ``partial_fit``: continue from a private copy of the served
        model, taken by snapshot, if the model is still where the copy left it (a named
        model is shared, not copied)."""
        c = self._service()
        try:
            st = c.get_model(source)
        except NotFoundError:
            st = None
        if st is None or st.sequence != self.__dict__.get("_sent"):
            raise NotFittedError(
                f"this estimator is a copy whose served model {source!r} "
                + ("no longer exists" if st is None else "has changed since the copy was made")
                + "; call fit() to start a new one"
            )
        name = self.model or f"sklearn-{uuid.uuid4().hex[:24]}"
        if self.model is None:
            c.import_snapshot(name, c.export_snapshot(source))
            self._own(name)
        self._model = name
        self.__dict__.pop("_sent", None)  # the source's sequence numbers, not the copy's

    def _count(self, samples: float) -> Any:
        return int(round(samples)) if self.half_life is None else float(samples)

    # --- fitting ----------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> "StreamPCA":
        """Fits a fresh served model on ``X`` (rows×features; sparse accepted), sent in
        batches of ``batch_size_`` rows, and waits for the service's fit.

        Raises ``ValueError`` for invalid input or too few samples for the service to
        fit."""
        self._validate_params()
        X = _validate_data(
            self,
            X,
            accept_sparse=["csr", "csc", "lil"],
            copy=False,
            dtype=[np.float64, np.float32],
            reset=True,
        )
        self._drop_model()
        if self.model is not None:
            self._service().delete_model(self.model, missing_ok=True)
        n_samples, n_features = X.shape
        self.batch_size_ = 5 * n_features if self.batch_size is None else self.batch_size
        for batch in gen_batches(n_samples, self.batch_size_, min_batch_size=self.n_components or 0):
            X_batch = X[batch]
            if sparse.issparse(X_batch):
                X_batch = X_batch.toarray()
            self.partial_fit(X_batch, check_input=False)
        self.flush()
        need = self._samples_needed()
        if self.n_samples_seen_ < need:
            raise ValueError(
                f"StreamPCA needs at least {need} samples to fit {self.n_components_} "
                f"components of {n_features} features on the service, got "
                f"n_samples={n_samples}"
            )
        self._sync()
        return self

    def partial_fit(self, X: Any, y: Any = None, check_input: bool = True) -> "StreamPCA":
        """Appends the rows of ``X`` to the served model (coalesced with other calls'
        rows up to ``buffer_bytes``, split only if larger than 32 MiB; sent in the
        background with ``max_in_flight`` > 0). The fitted attributes follow on first
        use. Raises :class:`streampca.SendError` if an earlier background send failed
        (this call's rows are then not taken)."""
        if self.__dict__.get("_closed"):
            raise NotFittedError(
                "this StreamPCA was closed (its served model deleted); call fit() to start "
                "a new model"
            )
        self._check_sends(
            "This call's rows were not taken; flush() sends the kept rows again (or fit() "
            "starts over) before partial_fit takes more"
        )
        fork = "_model" not in self.__dict__ and "_fork_from" in self.__dict__
        first_pass = "_model" not in self.__dict__ and not fork
        if check_input:
            self._validate_params()
            if sparse.issparse(X):
                raise TypeError(
                    "StreamPCA.partial_fit does not support sparse input. Either convert "
                    "data to dense or use StreamPCA.fit to do so in batches."
                )
            X, colsum = self._check_rows(X, first_pass)
        else:
            colsum = None
        n_samples, n_features = X.shape
        if fork:
            self._fork(self.__dict__.pop("_fork_from"))
        elif first_pass:
            self._open(n_samples, n_features)
            self._dtype = X.dtype
        if not first_pass and self.n_components is not None:
            # IncrementalPCA's checks on later calls (n_components changed by set_params).
            if not self.n_components <= n_features:
                raise ValueError(
                    "n_components=%r invalid for n_features=%d, need more rows than "
                    "columns for IncrementalPCA processing" % (self.n_components, n_features)
                )
            if self.n_components != self.n_components_:
                raise ValueError(
                    "Number of input features has changed from %i to %i between calls to "
                    "partial_fit! Try setting n_components to a fixed value."
                    % (self.n_components_, self.n_components)
                )
        self._ingest(X, colsum)
        return self

    def _check_rows(self, X: Any, first_pass: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``partial_fit``'s input check: scikit-learn's ``validate_data``, or, for what a
        stream sends after the first call (a 2-D float64/float32 ``ndarray`` of the fitted
        width, the estimator fitted without feature names), the same checks done
        directly: scikit-learn's version cost 0.74 µs of CPU per row of 784 features here
        at 256 rows per call (0.16 this way), mostly looking for dataframes. Its finiteness check is the column
        sums ``var_``'s statistics need anyway (a NaN or ±inf makes its column's sum
        non-finite); when a sum is not finite, scikit-learn's check decides (and raises
        its error). Returns the rows and their float64 column sums (``None`` when not
        computed)."""
        d = self.__dict__
        if (
            not first_pass
            and type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in (np.float64, np.float32)
            and X.shape[0] > 0
            and X.shape[1] == d.get("n_features_in_")
            and "feature_names_in_" not in d
        ):
            colsum = X.sum(axis=0, dtype=np.float64)
            if np.isfinite(colsum).all():
                return X, colsum
        X = _validate_data(self, X, copy=False, dtype=[np.float64, np.float32], reset=first_pass)
        return X, None

    def flush(self) -> "StreamPCA":
        """Sends the rows ``partial_fit`` has buffered (see ``buffer_bytes``) and waits
        for every background send (``max_in_flight``), sending again the rows of a failed
        send that the service did not apply. Raises :class:`streampca.SendError` if a
        send failed (naming its rows). Reading a fitted attribute, ``close``, ``fit`` and
        pickling flush on their own."""
        self._send_buffered()
        return self

    def _samples_needed(self) -> int:
        return min(self.n_components_ + _SERVER_GUARD_COLUMNS, self.n_features_in_) + 1

    # --- fitted attributes ------------------------------------------------------------

    def _sync(self) -> None:
        """Waits for the service's fit of every batch sent and reads the attributes."""
        if not self.__dict__.get("_stale", False):
            return
        if "_model" not in self.__dict__:
            raise NotFittedError("the served model behind this estimator was closed")
        self.flush()
        need = self._samples_needed()
        if self.n_samples_seen_ < need:
            raise NotFittedError(
                f"StreamPCA has sent {self.n_samples_seen_} samples; the service fits "
                f"{self.n_components_} components of {self.n_features_in_} features once "
                f"it has at least {need}: partial_fit more rows"
            )
        c = self._service()
        c.wait_until_fitted(
            self._model, timeout=self.fit_timeout, sequence=self.__dict__.get("_sent")
        )
        fit = c.components(self._model)
        if "_sender" in self.__dict__:
            # The service's count: rows of a send that failed after it left are in it
            # only if the service applied them.
            self.n_samples_seen_ = self._count(fit.samples)
        if not fit.converged:
            warnings.warn(
                f"the service's fit of {self._model!r} has not converged to tolerance "
                f"{self.tolerance} rad (largest error bound "
                f"{float(np.max(fit.error_bounds, initial=0.0)):.3g} rad)",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._cache = fitted_attributes(
            fit,
            self.n_components_,
            self.n_features_in_,
            self.__dict__.get("_stats"),
            self.__dict__.get("_dtype", np.float64),
        )
        self._served = int(fit.components.shape[0])
        self._stale = False

    def __sklearn_is_fitted__(self) -> bool:
        return "_cache" in self.__dict__ or "_stale" in self.__dict__

    # --- using the fit ----------------------------------------------------------------

    def transform(self, X: Any) -> np.ndarray:
        """Scores of ``X`` on the components: ``(X − mean_) @ components_.T``, divided
        by √``explained_variance_`` when whitening (shape rows × n_components_)."""
        check_is_fitted(self)
        X = _validate_data(
            self, X, dtype=[np.float64, np.float32], accept_sparse=("csr", "csc"), reset=False
        )
        if sparse.issparse(X):
            size = self.__dict__.get("batch_size_", 5 * X.shape[1])
            return np.vstack(
                [self._transform(X[b].toarray()) for b in gen_batches(X.shape[0], size)]
            )
        return self._transform(X)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        V = self.components_
        out = X @ V.T
        out -= np.reshape(self.mean_, (1, -1)) @ V.T
        if self.whiten:
            scale = np.sqrt(self.explained_variance_)
            scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
            out /= scale
        return out

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back to feature space: ``X @ components_ + mean_`` (undoing whitening)."""
        check_is_fitted(self)
        X = check_array(X, input_name="X", dtype=[np.float64, np.float32])
        if self.whiten:
            scaled = np.sqrt(self.explained_variance_[:, np.newaxis]) * self.components_
            return X @ scaled + self.mean_
        return X @ self.components_ + self.mean_

    def get_covariance(self) -> np.ndarray:
        """The probabilistic-PCA covariance ``components_.T · diag(explained_variance_
        − noise_variance_) · components_ + noise_variance_ · I`` (features × features)."""
        check_is_fitted(self)
        V, ev = self.components_, self.explained_variance_
        if self.whiten:
            V = V * np.sqrt(ev[:, np.newaxis])
        diff = np.where(ev > self.noise_variance_, ev - self.noise_variance_, 0.0)
        cov = (V.T * diff) @ V
        cov.flat[:: cov.shape[0] + 1] += self.noise_variance_
        return cov

    def get_precision(self) -> np.ndarray:
        """The inverse of :meth:`get_covariance`, by the matrix inversion lemma."""
        check_is_fitted(self)
        n_features = self.components_.shape[1]
        if self.n_components_ == 0:
            return np.eye(n_features) / self.noise_variance_
        if self.noise_variance_ == 0.0:
            return linalg.inv(self.get_covariance())
        V, ev = self.components_, self.explained_variance_
        if self.whiten:
            V = V * np.sqrt(ev[:, np.newaxis])
        diff = np.where(ev > self.noise_variance_, ev - self.noise_variance_, 0.0)
        precision = V @ V.T / self.noise_variance_
        precision.flat[:: precision.shape[0] + 1] += 1.0 / diff
        precision = V.T @ linalg.inv(precision) @ V
        precision /= -(self.noise_variance_**2)
        precision.flat[:: precision.shape[0] + 1] += 1.0 / self.noise_variance_
        return precision

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-likelihood of each row under the probabilistic PCA model (Tipping &
        Bishop), as :meth:`sklearn.decomposition.PCA.score_samples`."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        Xr = X - self.mean_
        n_features = X.shape[1]
        precision = self.get_precision()
        sign, logdet = np.linalg.slogdet(precision)
        logdet = logdet if sign > 0 else -np.inf
        log_like = -0.5 * (Xr * (Xr @ precision)).sum(axis=1)
        log_like -= 0.5 * (n_features * np.log(2.0 * np.pi) - logdet)
        return log_like

    def score(self, X: Any, y: Any = None) -> float:
        """Mean of :meth:`score_samples`."""
        return float(np.mean(self.score_samples(X)))

    def monitor(
        self, X: Any, alpha: Optional[float] = None, contributions: bool = False
    ) -> Projection:
        """The service's monitoring statistics of the rows of ``X`` against the served
        fit (an addition to scikit-learn's API; :meth:`score_samples` is unchanged).

        Returns a :class:`streampca.Projection` with, per row, ``t2`` (Hotelling's T²,
        Σ score²/``explained_variance_`` over the ``n_components_`` components, the same
        whether or not ``whiten``) and ``spe`` (squared prediction error,
        ‖x − inverse_transform(transform(x))‖² unwhitened); with ``alpha`` (0 < α < 0.5)
        the fit's control limits ``limit_t2``, ``limit_spe`` and the flags
        ``outlier_t2``, ``outlier_spe``; with ``contributions`` each feature's share of
        T² and SPE. ``scores`` are the unwhitened projections (signs as the service
        reports them, which may differ from ``components_``'s). Needs the served model
        (not a pickled copy before its first ``partial_fit``)."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        self._sync()
        if "_model" not in self.__dict__:
            raise NotFittedError(
                "monitor() needs the served model: this estimator is closed or a copy "
                "that has not forked it (partial_fit) yet"
            )
        k = min(self.n_components_, self.__dict__.get("_served", self.n_components_))
        return self._service().project(
            self._model, X, k=k, alpha=alpha, contributions=contributions
        )

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    # --- copies -----------------------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        if "_sender" in self.__dict__ or self.__dict__.get("_kept"):
            self.flush()  # a failed background send is raised, not pickled away
        if self.__dict__.get("_stale"):
            try:
                self._sync()
            except Exception:  # noqa: BLE001 - a copy without the fit is still a copy
                pass
        state = dict(super().__getstate__())  # a copy: never change self.__dict__
        for attr in ("_finalizer", "_sender", "_sender_fin", "_kept", "_scratch"):
            state.pop(attr, None)
        # The copy does not own the served model: it forks it on its first partial_fit.
        if "_model" in state:
            state["_fork_from"] = state.pop("_model")
        return state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.sparse = True
        return tags

    def _more_tags(self) -> Dict[str, Any]:  # pragma: no cover - scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32]}


def _fitted_property(attr: str) -> property:
    def get(self: StreamPCA) -> Any:
        if "_stale" not in self.__dict__ and "_cache" not in self.__dict__:
            raise AttributeError(attr)
        if self.__dict__.get("_stale"):
            self._sync()
        return self.__dict__["_cache"][attr]

    def set_(self: StreamPCA, value: Any) -> None:
        self.__dict__.setdefault("_cache", {})[attr] = value

    return property(get, set_, doc=f"Fitted ``{attr}`` (fetched from the service on use).")


for _attr in _FITTED:
    setattr(StreamPCA, _attr, _fitted_property(_attr))
