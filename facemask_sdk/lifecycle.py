"""The one lifecycle of everything in the SDK that holds a resource (Polygraphy's `BaseRunner` habit):
the backend runners, the CUDA kernels, `Detector`, and the benchmark's runners. Open until `close()` or
the end of a `with` block, then refused with one clear error; `close()` is idempotent. Holders of CUDA
state also belong to the thread that created them.

A subclass calls `_claim()` first in `__init__` (or in `open()`, for one that opens later), sets
`_closed = False` once fully built (a half-built one stays closed, so `close()` on it does nothing),
implements `_release()` to free its resources, and calls `_check_open()` at the start of every public
call.
"""

from __future__ import annotations

import threading

from facemask_sdk.errors import FacemaskError


class Resource:
    """`closed`, `close()`, the context manager and the open / owner-thread checks."""

    owner_thread_only = False
    """True where the state (a CUDA stream, an execution context) must stay on one thread."""
    thread_hint = "create one per thread"
    """What the refusal from another thread advises."""
    closed_hint = "create a new one"
    """What the refusal after `close()` advises."""

    _closed = True
    _owner: int | None = None

    def _claim(self) -> None:
        """Record the creating thread; the resource stays closed until its subclass marks it built."""
        self._closed = True
        self._owner = threading.get_ident()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the resources; calling it again does nothing."""
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

    def _label(self) -> str:
        """How refusals name this resource: its class and, where it has one, its file."""
        path = getattr(self, "path", None)
        return type(self).__name__ + (f" for {path}" if path is not None else "")

    def _check_open(self) -> None:
        if self._closed:
            raise FacemaskError(f"this {self._label()} is closed; {self.closed_hint}")
        if self.owner_thread_only and threading.get_ident() != self._owner:
            raise FacemaskError(f"a {type(self).__name__} belongs to the thread that created it; {self.thread_hint}")
