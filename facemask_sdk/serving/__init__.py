"""Serving many streams through Triton Inference Server.

`protocol` is the wire contract; `server` serves it with PyTriton (`facemask-sdk serve`);
`repository` writes a model repository for any tritonserver (`facemask-sdk triton-repository`), whose
Python-backend steps are `triton_models`; `client` returns `Detections` over gRPC; `bundled_server`
starts PyTriton's own tritonserver on a repository.
"""
