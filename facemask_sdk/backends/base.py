"""The one lifecycle of everything that holds a backend resource (Polygraphy's `BaseRunner` habit): the
ONNX Runtime and TensorRT runners and the CUDA kernels. Created open, used until `close()` or the end
of a `with` block, then refused with one clear error; `close()` is idempotent. Holders of CUDA state
also belong to the thread that created them.

A subclass sets `_closed = False` once fully built (a half-built runner stays closed, so `close()` on
it does nothing), implements `_release()` to free its resources, and calls `_check_open()` at the start
of every public call.
"""

from __future__ import annotations

import threading

from facemask_sdk.errors import FacemaskError


class Runner:
    """Base of `OnnxRuntimeRunner` and `TensorRTRunner`: `closed`, `close()`, context manager, checks."""

    owner_thread_only = False
    """True where the runner's state (a CUDA stream, an execution context) must stay on one thread."""
    thread_hint = "create one per thread"
    """What the refusal from another thread advises."""

    providers: tuple[str, ...] = ()
    """ONNX Runtime's execution providers in use; empty for other backends."""

    _closed = True
    _owner: int | None = None

    def _claim(self) -> None:
        """Record the creating thread; call first in `__init__`."""
        self._closed = True
        self._owner = threading.get_ident()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the runner's resources; calling it again does nothing."""
        if self._closed:
            return
        self._check_open()
        try:
            self._release()
        finally:
            self._closed = True

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            path = getattr(self, "path", None)
            where = f" for {path}" if path is not None else ""
            raise FacemaskError(f"this {type(self).__name__}{where} is closed; create a new one")
        if self.owner_thread_only and threading.get_ident() != self._owner:
            raise FacemaskError(f"a {type(self).__name__} belongs to the thread that created it; {self.thread_hint}")
