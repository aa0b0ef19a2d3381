"""`facemask-sdk serve` (PyTriton, one command) and `facemask-sdk triton-repository` (a model
repository for a tritonserver of your own). Both serve the `facemask_sdk.serving.protocol` contract."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, describe
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.serving.repository import NETWORK_BACKENDS, RepositoryOptions


def _check_free(host: str, port: int, what: str) -> None:
    """A clear error now rather than a server that dies while starting."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
            probe.bind((host, port))
    except OSError as exc:
        raise FacemaskError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}") from None


@click.command("serve")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model (default: the shipped one). One exported with --dynamic-batch runs each batch in one call.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="How long the dynamic batcher waits to fill a batch.",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Model instances (each its own ONNX Runtime session).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads per instance.")
@click.option(
    "--access-token",
    envvar="FACEMASK_SDK_TRITON_TOKEN",
    default=None,
    help="Token for Triton's management endpoints (model control, statistics, logging, ...); it does not "
    "guard inference. Without it PyTriton picks a random one that is never shown, so those endpoints stay "
    "closed. Local users can read it from tritonserver's command line. Env: FACEMASK_SDK_TRITON_TOKEN.",
)
@click.option("--score-threshold", type=float, default=PostprocessConfig.score_threshold, show_default=True)
@click.option("--iou-threshold", type=float, default=PostprocessConfig.iou_threshold, show_default=True)
def serve(
    model: Path | None,
    host: str,
    http_port: int,
    grpc_port: int,
    max_batch_size: int,
    max_queue_delay_us: int,
    instances: int,
    threads: int | None,
    access_token: str | None,
    score_threshold: float,
    iou_threshold: float,
) -> None:
    """Serve the detector over Triton's HTTP/gRPC protocol (PyTriton), with dynamic batching."""
    from facemask_sdk.serving.server import ServeOptions
    from facemask_sdk.serving.server import serve as run_server

    options = ServeOptions(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        threads=threads,
        access_token=access_token,
    )
    PostprocessConfig(score_threshold=score_threshold, iou_threshold=iou_threshold)  # one-line errors first
    if model is not None and not model.is_file():
        raise FileNotFoundError(f"model file not found: {model}")
    _check_free(host, http_port, "HTTP")
    _check_free(host, grpc_port, "gRPC")
    run_server(model, options, score_threshold, iou_threshold, on_ready=lambda line: click.echo(line, err=True))
    click.echo("stopped", err=True)


@click.command("triton-repository")
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="ONNX with a dynamic batch axis: facemask-sdk export --dynamic-batch.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Repository folder to write.")
@click.option(
    "--backend",
    type=click.Choice(NETWORK_BACKENDS),
    default="onnxruntime",
    show_default=True,
    help="The network's Triton backend; python runs it on ONNX Runtime in the Python backend.",
)
@click.option(
    "--engine",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TensorRT engine (tensorrt backend) built with a batch profile up to --max-batch-size.",
)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Network instances.")
@click.option(
    "--host-instances",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Instances of each Python step (pre- and post-processing).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="ONNX Runtime threads per network instance (0: its default).",
)
@click.option("--score-threshold", type=float, default=PostprocessConfig.score_threshold, show_default=True)
@click.option("--iou-threshold", type=float, default=PostprocessConfig.iou_threshold, show_default=True)
@click.option(
    "--no-closeup-check",
    is_flag=True,
    help=f"Skip the {describe(DEFAULT_CLOSEUP_CHECK)} (on by default, as in detect and serve: a second network pass, "
    "by BLS from the post-processing step, for frames with such a face only).",
)
@click.option("--force", is_flag=True, help="Replace a repository this command wrote at --out (never another folder).")
def triton_repository(
    onnx_path: Path,
    out: Path,
    backend: str,
    engine: Path | None,
    max_batch_size: int,
    instances: int,
    host_instances: int,
    threads: int,
    score_threshold: float,
    iou_threshold: float,
    no_closeup_check: bool,
    force: bool,
) -> None:
    """Write a Triton model repository: ensemble of pre-processing, network and post-processing."""
    from facemask_sdk.serving.repository import write_repository

    preferred = tuple(size for size in (max_batch_size // 2, max_batch_size) if size >= 1)
    options = RepositoryOptions(
        backend=backend,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(sorted(set(preferred))),
        network_instances=instances,
        host_instances=host_instances,
        network_threads=threads,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        closeup_check=not no_closeup_check,
    )
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    written = write_repository(out, onnx_path, options, engine=engine, force=force)
    click.echo(
        f"wrote {written.path}: model 'facemask' ({written.spec.image_size[0]} px, {backend} network, "
        f"batches up to {max_batch_size}, {'no close-up check' if no_closeup_check else 'with the close-up check'})"
    )
    if written.missing_engine is not None:
        click.echo(
            f"build the engine on the serving GPU: facemask-sdk build-engine --onnx {onnx_path} --fp16 "
            f"--dynamic-batch 1,{preferred[0]},{max_batch_size} --out {written.missing_engine}"
        )
    click.echo(f"run: tritonserver --model-repository {written.path.resolve()}")
