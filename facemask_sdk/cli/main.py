"""Entry point of `facemask-sdk`. Sub-commands live in their own modules and load only when run,
so `facemask-sdk --help` is instant and works without torch (Polygraphy's lazy-import habit)."""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata

import click

from facemask_sdk import __version__
from facemask_sdk.errors import FacemaskError

# runtime command name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "detect": ("facemask_sdk.cli.detect", "detect", "Detect masks in images, folders, videos, cameras or streams."),
    "data-info": ("facemask_sdk.cli.data_info", "data_info", "Summarise a VOC face-mask dataset and its problems."),
    "serve": ("facemask_sdk.cli.serve", "serve", "Serve the detector over Triton's HTTP/gRPC protocol (PyTriton)."),
    "triton-repository": (
        "facemask_sdk.cli.serve",
        "triton_repository",
        "Write a Triton model repository (ensemble: pre-processing, network, post-processing).",
    ),
}

TOOLING_GROUP = "facemask_sdk.commands"
"""Entry-point group of the tooling commands (train, eval, export, build-engine, bench): the runtime names
no tooling package; `pyproject.toml` maps each command to its module and the extra it needs."""

DISTRIBUTION = "facemask-sdk"


def tooling_commands() -> dict[str, metadata.EntryPoint]:
    """Installed tooling commands by name (empty for a runtime-only install)."""
    return {ep.name: ep for ep in metadata.entry_points(group=TOOLING_GROUP)}


def extra_providing(module: str, preferred: tuple[str, ...] = ()) -> str | None:
    """The extra of this distribution that installs `module` (a top-level import name), read from the
    package metadata so the hint always matches `pyproject.toml`: one of `preferred` (the command's own
    extras) if it has it, else the smallest extra that does."""
    wanted = _normalise(module.split(".")[0])
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    sizes: dict[str, int] = {}
    providers: set[str] = set()
    for requirement in requirements:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if not (marker and name):
            continue
        extra = marker.group(1)
        sizes[extra] = sizes.get(extra, 0) + 1
        if _normalise(name.group(0)) == wanted:
            providers.add(extra)
    for extra in preferred:
        if extra in providers:
            return extra
    return min(providers, key=lambda extra: (sizes[extra], extra), default=None)


DISTRIBUTIONS = {"cv2": "opencv-python-headless", "yaml": "PyYAML", "PIL": "Pillow", "sklearn": "scikit-learn"}
"""pip's name for an import name where the two differ."""


def missing_module_message(command: str, module: str, preferred: tuple[str, ...] = ()) -> str:
    top = module.split(".")[0]
    extra = extra_providing(top, preferred)
    install = f"pip install 'facemask-sdk[{extra}]'" if extra else f"pip install {DISTRIBUTIONS.get(top, top)}"
    return f"'{command}' needs the Python package '{top}', which is not installed: {install}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class LazyGroup(click.Group):
    """Commands loaded only when run (or their help is asked for); their expected failures end as one
    `error:` line and exit code 2. A group of more commands (`facemask-sdk dev`) subclasses it with its own
    table, `command_extras` and `command_label`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *tooling_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attribute, _ = COMMANDS[name]
            return getattr(importlib.import_module(module_name), attribute)
        entry_point = tooling_commands().get(name)
        if entry_point is None:
            return None
        try:
            command = entry_point.load()
        except ImportError as exc:
            return unavailable_command(
                name, missing_module_message(name, exc.name or str(exc), tuple(entry_point.extras))
            )
        command.facemask_extras = tuple(entry_point.extras)
        return command

    def command_extras(self, name: str) -> tuple[str, ...]:
        """The extras that install what sub-command `name` imports: the first choice of a missing-package hint."""
        entry_point = tooling_commands().get(name)  # its extras, without importing it again
        return tuple(entry_point.extras) if entry_point is not None else ()

    def command_label(self, name: str) -> str:
        """How an error line names sub-command `name`."""
        return name

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in COMMANDS:
                rows.append((name, COMMANDS[name][2]))
            else:
                command = self.get_command(ctx, name)
                rows.append((name, command.get_short_help_str(limit=90) if command else ""))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args:  # named in error lines even when loading the command is what fails
            ctx.meta["facemask_command"] = args[0]
        return super().resolve_command(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NO_ARGS_IS_HELP:  # a bare group: its help, as click shows it
            raise
        except click.UsageError as exc:  # the group's own options (facemask-sdk --bogus)
            _refuse_usage(exc, info_name or "facemask-sdk")

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NO_ARGS_IS_HELP:
            raise
        except click.UsageError as exc:  # a subcommand's bad option or argument
            _refuse_usage(exc, ctx.command_path)
        except (FacemaskError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:  # an optional dependency a command imports when it runs
            name = ctx.invoked_subcommand or ctx.meta.get("facemask_command")
            label, preferred = (self.command_label(name), self.command_extras(name)) if name else ("facemask-sdk", ())
            click.echo(f"error: {missing_module_message(label, exc.name or str(exc), preferred)}", err=True)
            sys.exit(2)
        except PermissionError as exc:  # e.g. an --out folder in a read-only place
            click.echo(f"error: permission denied: {exc.filename or exc}; choose a folder you can write to", err=True)
            sys.exit(2)
        except OSError as exc:  # disk full, read-only file system, ...
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(2)


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""click >= 8.2 raises this for a bare group: the help it prints is not a refusal."""


def _refuse_usage(exc: click.UsageError, command_path: str) -> None:
    """A bad option or argument: one `error:` line naming where help is, exit 2, like every refusal."""
    where = exc.ctx.command_path if exc.ctx is not None else command_path
    click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
    sys.exit(2)


def unavailable_command(name: str, message: str) -> click.Command:
    """A stand-in for a command that cannot load: any use of it prints `message` as one error line, exit 2."""

    @click.command(name=name, help=message, context_settings={"ignore_unknown_options": True, "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        click.echo(f"error: {message}", err=True)
        sys.exit(2)

    return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="facemask-sdk")
def cli() -> None:
    """facemask-sdk: train, export, optimise, run and benchmark a face-mask detector."""


if __name__ == "__main__":
    cli()
