"""Plots of training runs: per-epoch curves of one run, val mAP against training wall time, and the
found / right-class shares of evaluations by face size.

The wall-time plot is how recipes are compared in this project (issue: beat a peer per CPU hour):
every run's val mAP after each epoch, at the cumulative training minutes it took to get there.
"""

from __future__ import annotations

from pathlib import Path

import click

PEER_YOLO11N = {
    "label": "peer: YOLO11n from scratch, 512 px (same CPU kind)",
    "minutes": 60.0,
    "map50": 0.418,
    "map": 0.241,
}
"""The peer measurement the issue quotes: Ultralytics YOLO11n, no pretrained weights, 60 min on this CPU."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path) -> Path:
    """Training loss and val mAP per epoch, side by side."""
    plt = _pyplot()

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "total"), ("train_class_loss", "class"), ("train_box_loss", "box")):
        ax_loss.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_loss.legend()
    ax_map.plot(epochs, [h["val"]["map"] for h in history], marker="o", label="mAP@[.5:.95]")
    ax_map.plot(epochs, [h["val"]["map50"] for h in history], marker="o", label="mAP@.5")
    ax_map.set(title="validation", xlabel="epoch", ylabel="mAP", ylim=(0, 1))
    ax_map.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_map_vs_time(runs: list[dict], path: Path, peer: dict | None = PEER_YOLO11N) -> Path:
    """val mAP@.5 and mAP@[.5:.95] against cumulative training minutes for each run.

    `runs`: dicts with `label`, `minutes` (list), `map50` (list), `map` (list), and optionally
    `start_minutes` (the training time of the stages it started from).
    """
    plt = _pyplot()
    fig, (ax50, ax) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for run in runs:
        offset = run.get("start_minutes", 0.0)
        minutes = [offset + m for m in run["minutes"]]
        # a single point (a result, not a run) gets a marker large enough to see beside the curves
        style = {"marker": "D", "markersize": 7, "zorder": 4} if len(minutes) == 1 else {"marker": "."}
        ax50.plot(minutes, run["map50"], label=run["label"], **style)
        ax.plot(minutes, run["map"], label=run["label"], **style)
    if peer:
        ax50.scatter([peer["minutes"]], [peer["map50"]], marker="*", s=160, color="black", zorder=5)
        ax.scatter([peer["minutes"]], [peer["map"]], marker="*", s=160, color="black", label=peer["label"], zorder=5)
    ax50.set(title="val mAP@.5", xlabel="training wall time (min, cumulative)", ylabel="mAP", ylim=(0, 1))
    ax.set(title="val mAP@[.5:.95]", xlabel="training wall time (min, cumulative)", ylim=(0, 1))
    for axis in (ax50, ax):
        axis.grid(True, alpha=0.3)
    # mAP@[.5:.95] stays below 0.6 for every run so far: its upper half holds the legend clear of the curves
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_by_size(series: list[tuple[str, dict]], path: Path) -> Path:
    """Found share and right-class share per face-size bucket, one line per (label, eval.json report).

    The close-up failure (an unmasked face filling the frame called masked) is a fall of the right-class
    line at the large buckets; mAP alone does not show it.
    """
    plt = _pyplot()
    fig, (ax_found, ax_right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for label, report in series:
        buckets = report["by_size"]["buckets"]
        names = list(buckets)
        for axis, key in ((ax_found, "found_share"), (ax_right, "right_class_share")):
            values = [buckets[name][key] for name in names]
            shown = [(i, v) for i, v in enumerate(values) if v is not None]
            axis.plot([i for i, _ in shown], [v for _, v in shown], marker="o", label=label)
            axis.set_xticks(range(len(names)), names)
    first = series[0][1]["by_size"] if series else {"iou_threshold": 0.5, "score_threshold": 0.3}
    ious = {report["by_size"]["iou_threshold"] for _, report in series}
    iou = f"IoU >= {first['iou_threshold']:g}" if len(ious) <= 1 else "IoU as in the legend"
    ax_found.set(
        title=f"faces found (score >= {first['score_threshold']:g}, {iou})",
        xlabel="face size (sqrt(area) / long side)",
        ylabel="share of labelled faces",
        ylim=(0, 1.02),
    )
    ax_right.set(
        title="labelled faces whose best box has the right class",
        xlabel="face size (sqrt(area) / long side)",
        ylim=(0, 1.02),
    )
    for axis in (ax_found, ax_right):
        axis.grid(True, alpha=0.3)
    ax_right.axhline(0.9, color="grey", linestyle="--", linewidth=1)
    ax_right.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_from_metrics(label: str, metrics_path: Path, start_minutes: float = 0.0) -> dict:
    """A `plot_map_vs_time` run from a run's metrics.json (cumulative minutes from `train_seconds`
    where a history predates `train_minutes_total`)."""
    import json

    history = json.loads(Path(metrics_path).read_text())["history"]
    minutes, total = [], 0.0
    for entry in history:
        total = entry.get("train_minutes_total", total + entry.get("train_seconds", 0.0) / 60)
        minutes.append(total)
    return {
        "label": label,
        "minutes": minutes,
        "start_minutes": start_minutes,
        "map50": [h["val"]["map50"] for h in history],
        "map": [h["val"]["map"] for h in history],
    }


def runs_from_specs(specs: list[tuple[str, str]]) -> list[dict]:
    """`plot_map_vs_time` runs from the CLI's ("run", "LABEL=METRICS_JSON[@START]") and
    ("points", "LABEL=MIN:MAP50:MAP,...") entries, in their order (the legend's order)."""
    runs = []
    for kind, spec in specs:
        label, rest = spec.split("=", 1)
        if kind == "points":
            rows = [tuple(float(v) for v in point.split(":")) for point in rest.split(",")]
            runs.append(
                {
                    "label": label,
                    "minutes": [r[0] for r in rows],
                    "map50": [r[1] for r in rows],
                    "map": [r[2] for r in rows],
                }
            )
        else:
            path, _, start = rest.partition("@")
            runs.append(run_from_metrics(label, Path(path), float(start or 0)))
    return runs


def _labelled(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    """Every value of a repeatable LABEL=... option has its label."""
    for spec in specs:
        label, equals, rest = spec.partition("=")
        if not (label and equals and rest):
            raise click.BadParameter(f"takes LABEL={param.metavar.split('=', 1)[1]}, got {spec!r}")
    return specs


def _points(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    for spec in _labelled(ctx, param, specs):
        for point in spec.split("=", 1)[1].split(","):
            try:
                if len([float(v) for v in point.split(":")]) != 3:
                    raise ValueError
            except ValueError:
                raise click.BadParameter(f"each point is MIN:MAP50:MAP (three numbers), got {point!r}") from None
    return specs


class _SeriesInOrder(click.Command):
    """Records the order in which --run and --points occur: the two share one list, so the legend keeps the
    order of the command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        order = self.make_parser(ctx).parse_args(args=list(args))[2]
        ctx.meta["plots_series_order"] = [param.name for param in order if param.name in ("run", "points")]
        return super().parse_args(ctx, args)


@click.command("plots", cls=_SeriesInOrder)
@click.option("--run", multiple=True, metavar="LABEL=METRICS_JSON[@START_MINUTES]", callback=_labelled)
@click.option(
    "--points",
    multiple=True,
    metavar="LABEL=MIN:MAP50:MAP,MIN:MAP50:MAP,...",
    callback=_points,
    help="A run known only by a few (minutes, mAP@.5, mAP) points.",
)
@click.option(
    "--by-size",
    multiple=True,
    metavar="LABEL=EVAL_JSON",
    callback=_labelled,
    help="Instead: found / right-class shares by face size of these evaluations.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def main(
    ctx: click.Context, run: tuple[str, ...], points: tuple[str, ...], by_size: tuple[str, ...], out: Path
) -> None:
    """Val mAP against cumulative training minutes, next to the peer (--run, --points: one curve or point set
    each, legend in command-line order); with --by-size, the found / right-class shares by face size."""
    if by_size:
        import json

        pairs = [spec.split("=", 1) for spec in by_size]
        click.echo(plot_by_size([(label, json.loads(Path(file).read_text())) for label, file in pairs], out))
        return
    given = {"run": iter(run), "points": iter(points)}
    series = [(kind, next(given[kind])) for kind in ctx.meta["plots_series_order"]]
    click.echo(plot_map_vs_time(runs_from_specs(series), out))
