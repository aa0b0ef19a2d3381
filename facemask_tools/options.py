"""Option pieces the tooling commands share: comma-separated lists, checked where they are parsed so that a
wrong item is one error line (exit code 2) before any work."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click


def comma_separated(
    kind: type = str,
    *,
    choices: Iterable[str] | None = None,
    what: str = "value",
    minimum: int | None = None,
    multiple_of: int | None = None,
) -> Callable[[click.Context, click.Parameter, str | None], list | None]:
    """A click callback turning an option's text `A,B,C` into a list of `kind` (empty items dropped; `str` items
    kept as written, spaces included). An item that is not a `kind`, not among `choices` (named `what` in the
    message), below `minimum` or not a multiple of `multiple_of` is refused with `click.BadParameter`."""
    allowed = list(choices) if choices is not None else None

    def callback(ctx: click.Context, param: click.Parameter, text: str | None) -> list | None:
        if text is None:
            return None
        items = [item for item in text.split(",") if item.strip()]
        try:
            values = [kind(item) for item in items]
        except ValueError:
            kinds = "whole numbers" if kind is int else "numbers" if kind is float else f"{kind.__name__} values"
            raise click.BadParameter(f"takes comma-separated {kinds}, got {text!r}") from None
        if allowed is not None:
            unknown = [value for value in values if value not in allowed]
            if unknown:
                raise click.BadParameter(
                    f"unknown {what}(s) {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}"
                )
        if minimum is not None and any(value < minimum for value in values):
            raise click.BadParameter(f"values must be at least {minimum}, got {text!r}")
        if multiple_of is not None and any(value % multiple_of for value in values):
            raise click.BadParameter(f"values must be multiples of {multiple_of}, got {text!r}")
        return values

    return callback
