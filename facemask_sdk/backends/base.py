"""The network runners' base: the SDK's one lifecycle (`facemask_sdk.lifecycle.Resource`) plus what the
network stage reports about itself."""

from __future__ import annotations

from facemask_sdk.lifecycle import Resource


class Runner(Resource):
    """Base of `OnnxRuntimeRunner`, `OpenVinoRunner` and `TensorRTRunner`."""

    providers: tuple[str, ...] = ()
    """ONNX Runtime's execution providers in use; empty for other backends."""
