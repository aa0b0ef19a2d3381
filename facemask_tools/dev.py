"""`facemask-sdk dev`: the developer tools, one command line for the measurements and model-file chores
behind the model card and the training log (`facemask-sdk dev NAME --help` for each).

Each tool is a click command `main` in its own module, imported only when that tool runs or its help is
asked for: `facemask-sdk dev --help` reads the table below and imports nothing heavy (no torch, no ONNX).
"""

from __future__ import annotations

import importlib

import click

from facemask_sdk.cli.main import LazyGroup, missing_module_message, unavailable_command

# tool name -> (module, attribute, extras to suggest when a package is missing, one-line help for `dev --help`)
TOOLS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "compact-data": (
        "facemask_tools.training.compact_data",
        "main",
        (),
        "A compact JPEG copy of a VOC dataset (about 25 MB), to carry to a GPU machine.",
    ),
    "plots": (
        "facemask_tools.training.plots",
        "main",
        ("eval",),
        "Val mAP against cumulative training minutes beside the peer, or found / right-class shares by face size.",
    ),
    "average": (
        "facemask_tools.training.average",
        "main",
        ("train",),
        "The uniform average of weights-only checkpoints of one model (a model soup).",
    ),
    "class-offset": (
        "facemask_tools.training.class_offset",
        "main",
        ("train",),
        "Measure logit offsets for one class (the rare one) and fold the best into a checkpoint's class head.",
    ),
    "ship": (
        "facemask_tools.training.ship",
        "main",
        ("train",),
        "A run's EMA weights as a weights-only checkpoint (for models/).",
    ),
    "measure-precision": (
        "facemask_tools.build_engine.measure_precision",
        "main",
        ("export", "eval"),
        "Val mAP and output error of the FP32, FP16 and INT8 variants on CPU with ONNX Runtime.",
    ),
    "train-speed": (
        "facemask_tools.benchmarks.train_speed",
        "main",
        ("train",),
        "Images/s of a real training step per precision, memory format and crop size.",
    ),
    "tracking-clips": (
        "facemask_tools.benchmarks.tracking_clips",
        "main",
        (),
        "Write the tracker's test clips (known people) as .mp4 files.",
    ),
    "anchor-coverage": (
        "facemask_tools.benchmarks.anchor_coverage",
        "main",
        (),
        "Share of faces whose best anchor has IoU >= 0.5, per anchor scale (a Markdown table).",
    ),
    "serve-env": (
        "facemask_tools.benchmarks.serve_env",
        "main",
        (),
        "The Python environment that runs the servers (a wheel plus its [serve] extra); prints its python.",
    ),
    "soak": (
        "facemask_tools.benchmarks.soak",
        "main",
        ("onnx",),
        "Resident memory over many frames of synthetic video, through Detector and detect.",
    ),
    "tracker": (
        "facemask_tools.benchmarks.tracker",
        "main",
        ("onnx",),
        "People counted, ID switches and cost of the face tracker (beside ByteTrack when installed).",
    ),
    "input-size": (
        "facemask_tools.benchmarks.input_size",
        "main",
        ("train",),
        "Val mAP of one checkpoint's weights evaluated at several input sizes.",
    ),
    "serving-load": (
        "facemask_tools.benchmarks.serving_load",
        "main",
        ("client", "onnx"),
        "Throughput, p50 and p99 latency of the serving paths at several client concurrencies.",
    ),
}


class DevGroup(LazyGroup):
    """`LazyGroup` over the `TOOLS` table: the same lazy loading and one-line errors (exit code 2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(TOOLS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in TOOLS:
            return None
        module_name, attribute, extras, _ = TOOLS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            message = missing_module_message(self.command_label(name), exc.name or str(exc), extras)
            return unavailable_command(name, message)
        return getattr(module, attribute)

    def command_extras(self, name: str) -> tuple[str, ...]:
        return TOOLS[name][2] if name in TOOLS else ()

    def command_label(self, name: str) -> str:
        return f"dev {name}"

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, TOOLS[name][3]) for name in self.list_commands(ctx)])


@click.group(cls=DevGroup)
def dev() -> None:
    """Developer tools: the measurements and model-file chores behind the model card and the training log."""
