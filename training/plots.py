"""Plots of training runs: per-epoch curves of one run, and val mAP against training wall time.

The wall-time plot is how recipes are compared in this project (issue: beat a peer per CPU hour):
every run's val mAP after each epoch, at the cumulative training minutes it took to get there.
"""

from __future__ import annotations

from pathlib import Path

PEER_YOLO11N = {"label": "peer: YOLO11n from scratch, 512 px (same CPU kind)", "minutes": 60.0, "map50": 0.418, "map": 0.241}
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


def run_from_metrics(label: str, metrics_path: Path, start_minutes: float = 0.0) -> dict:
    """A `plot_map_vs_time` run from a run's metrics.json (cumulative minutes from `train_seconds`
    where a history predates `train_minutes_total`)."""
    import json

    history = json.loads(Path(metrics_path).read_text())["history"]
    minutes, total = [], 0.0
    for entry in history:
        total = entry.get("train_minutes_total", total + entry.get("train_seconds", 0.0) / 60)
        minutes.append(total)
    return {"label": label, "minutes": minutes, "start_minutes": start_minutes,
            "map50": [h["val"]["map50"] for h in history], "map": [h["val"]["map"] for h in history]}


def runs_from_specs(specs: list[tuple[str, str]]) -> list[dict]:
    """`plot_map_vs_time` runs from the CLI's ("run", "LABEL=METRICS_JSON[@START]") and
    ("points", "LABEL=MIN:MAP50:MAP,...") entries, in their order (the legend's order)."""
    runs = []
    for kind, spec in specs:
        label, rest = spec.split("=", 1)
        if kind == "points":
            rows = [tuple(float(v) for v in point.split(":")) for point in rest.split(",")]
            runs.append({"label": label, "minutes": [r[0] for r in rows], "map50": [r[1] for r in rows],
                         "map": [r[2] for r in rows]})
        else:
            path, _, start = rest.partition("@")
            runs.append(run_from_metrics(label, Path(path), float(start or 0)))
    return runs


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="val mAP against cumulative training minutes, next to the peer")
    # --run and --points share one list, so the legend keeps the order of the command line
    parser.add_argument("--run", dest="series", action="append", default=[], type=lambda v: ("run", v),
                        metavar="LABEL=METRICS_JSON[@START_MINUTES]")
    parser.add_argument("--points", dest="series", action="append", type=lambda v: ("points", v),
                        metavar="LABEL=MIN:MAP50:MAP,MIN:MAP50:MAP,...",
                        help="a run known only by a few (minutes, mAP@.5, mAP) points")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = runs_from_specs(args.series)
    print(plot_map_vs_time(runs, args.out))
