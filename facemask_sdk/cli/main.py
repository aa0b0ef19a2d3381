"""Entry point of `facemask-sdk`. Sub-commands live in their own modules and load only when run,
so `facemask-sdk --help` is instant and works without torch (Polygraphy's lazy-import habit)."""

from __future__ import annotations

import importlib
import sys

import click

from facemask_sdk import __version__
from facemask_sdk.errors import FacemaskError

# command name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "detect": ("facemask_sdk.cli.detect", "detect", "Detect masks in images, folders, videos, cameras or streams."),
    "data-info": ("facemask_sdk.cli.data_info", "data_info", "Summarise a VOC face-mask dataset and its problems."),
    "train": ("training.cli", "train", "Train an EfficientDet face-mask detector (needs [train])."),
    "eval": ("training.cli", "evaluate", "COCO mAP of a checkpoint on a dataset split (needs [train])."),
    "export": ("build_engine.cli", "export", "Export a checkpoint to ONNX with its metadata (needs [export])."),
    "build-engine": ("build_engine.cli", "build_engine", "FP16/INT8 ONNX variants and TensorRT engines."),
    "bench": ("benchmarks.cli", "bench", "FPS and mAP of every backend and precision vs the PyTorch baseline."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, short_help = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            return _unavailable(name, short_help, missing)
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (FacemaskError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except PermissionError as exc:  # e.g. an --out folder in a read-only place
            click.echo(f"error: permission denied: {exc.filename or exc}; choose a folder you can write to", err=True)
            sys.exit(2)
        except OSError as exc:  # disk full, read-only file system, ...
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(2)


def _unavailable(name: str, short_help: str, missing: str) -> click.Command:
    @click.command(name=name, help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"'{name}' needs the Python package '{missing}', which is not installed. "
            f"Install the extras: pip install 'facemask-sdk[all]'"
        )

    return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="facemask-sdk")
def cli() -> None:
    """facemask-sdk: train, export, optimise, run and benchmark a face-mask detector."""


if __name__ == "__main__":
    cli()
