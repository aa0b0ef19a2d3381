"""facemask_sdk.lifecycle.Resource: the one guarded lifecycle of the runners, the CUDA kernels, `Detector`
and the benchmark runners."""

from __future__ import annotations

import threading

import pytest

from facemask_sdk.errors import FacemaskError
from facemask_sdk.lifecycle import Resource


class Probe(Resource):
    owner_thread_only = True

    def __init__(self, fail: bool = False) -> None:
        self._claim()
        self.path = "probe.engine"
        self.released = 0
        if fail:
            raise FacemaskError("half built")
        self._closed = False

    def _release(self) -> None:
        self.released += 1

    def infer(self) -> str:
        self._check_open()
        return "ok"


def test_open_use_close_once_then_refuse() -> None:
    with Probe() as probe:
        assert probe.infer() == "ok" and not probe.closed
    assert probe.closed and probe.released == 1
    probe.close()
    assert probe.released == 1  # idempotent
    with pytest.raises(FacemaskError, match="this Probe for probe.engine is closed; create a new one"):
        probe.infer()


def test_other_threads_are_refused_where_the_runner_owns_cuda_state(error_of) -> None:
    probe = Probe()
    errors: list[str] = []
    thread = threading.Thread(target=lambda: errors.append(error_of(probe.infer)))
    thread.start()
    thread.join()
    assert errors and "belongs to the thread that created it" in errors[0]
    assert probe.infer() == "ok"


def test_a_half_built_runner_is_closed() -> None:
    with pytest.raises(FacemaskError, match="half built"):
        Probe(fail=True)
