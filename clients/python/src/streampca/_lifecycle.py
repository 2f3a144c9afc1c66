"""The lifecycle of ``StreamPCA``'s estimator-owned models on the service.

- :func:`shared_client`: one :class:`streampca.Client` (one keep-alive pool) per service
  and key, shared by every estimator.
- :func:`own`: registers a served model as owned by an estimator, so it is deleted when
  the estimator is garbage collected (by a daemon "reaper" thread) or, at the latest,
  when the interpreter exits (an ``atexit`` hook that deletes every owned model left,
  those of live estimators included).
- :func:`delete_now`: deletes an owned model at once (``close``, ``fit``).

A finalizer may run anywhere (inside another request on the same connection pool, say),
so it only queues the model's name (``SimpleQueue.put`` is reentrant); the reaper
thread, with its own connections, deletes it.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import Any, Dict, Optional, Tuple

from .client import Client

__all__ = ["delete_now", "own", "shared_client"]

_clients: Dict[Tuple[Optional[str], Optional[str]], Client] = {}
_clients_lock = threading.Lock()


def shared_client(url: Optional[str], api_key: Optional[str]) -> Client:
    """One client (one keep-alive pool) per service and key, shared by estimators."""
    key = (url, api_key)
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = _clients[key] = Client(url=url, api_key=api_key)
        return c


# Owned models to delete: (name, url, api_key) queued by finalizers, and every owned
# model not yet deleted, by name (what the exit hook deletes).
_doomed: "queue.SimpleQueue[Tuple[str, Optional[str], Optional[str]]]" = queue.SimpleQueue()
_live: Dict[str, Tuple[Optional[str], Optional[str]]] = {}
_worker: Optional[threading.Thread] = None
_worker_lock = threading.Lock()


def delete_now(name: str, url: Optional[str], api_key: Optional[str], c: Any) -> None:
    """Deletes the owned model ``name`` with the client ``c`` (best effort: an error,
    such as the service being gone, is ignored) and forgets it."""
    try:
        c.delete_model(name, missing_ok=True)
    except Exception:  # noqa: BLE001 - best effort: the service may be gone
        pass
    _live.pop(name, None)


def own(owner: Any, name: str, url: Optional[str], api_key: Optional[str]) -> weakref.finalize:
    """Registers the served model ``name`` as owned by ``owner`` and returns the
    finalizer that queues it for deletion when ``owner`` is collected (``detach`` it
    when the model is deleted otherwise)."""
    _start_reaper()
    _live[name] = (url, api_key)
    fin = weakref.finalize(owner, _doom, name, url, api_key)
    fin.atexit = False  # the module's exit hook deletes what is left
    return fin


def _reaper() -> None:
    clients: Dict[Tuple[Optional[str], Optional[str]], Client] = {}
    while True:
        name, url, api_key = _doomed.get()
        c = clients.get((url, api_key))
        if c is None:
            c = clients[(url, api_key)] = Client(url=url, api_key=api_key, retries=2)
        delete_now(name, url, api_key, c)


def _doom(name: str, url: Optional[str], api_key: Optional[str]) -> None:
    """Finalizer: queue an owned model for deletion (safe from any context)."""
    _doomed.put((name, url, api_key))


def _start_reaper() -> None:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = threading.Thread(target=_reaper, name="streampca-reaper", daemon=True)
            _worker.start()


@atexit.register
def _delete_owned_models_at_exit() -> None:
    pending = dict(_live)
    while True:
        try:
            name, url, api_key = _doomed.get_nowait()
        except queue.Empty:
            break
        pending[name] = (url, api_key)
    for name, (url, api_key) in pending.items():
        try:
            with Client(url=url, api_key=api_key, timeout=5.0, retries=0) as c:
                c.delete_model(name, missing_ok=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
