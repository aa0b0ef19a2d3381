"""Plots (facemask_tools.training.plots): mAP against training time, read from a run's metrics.json."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("effdet")


def test_map_vs_time_plot_from_metrics(tmp_path):
    from facemask_tools.training.plots import plot_map_vs_time, run_from_metrics

    metrics = tmp_path / "metrics.json"
    history = [
        {"train_seconds": 60.0, "val": {"map50": 0.1, "map": 0.05}},
        {"train_minutes_total": 2.5, "val": {"map50": 0.2, "map": 0.1}},
    ]
    metrics.write_text(json.dumps({"history": history}))
    run = run_from_metrics("r", metrics, start_minutes=10)
    assert run["minutes"] == [1.0, 2.5] and run["start_minutes"] == 10 and run["map50"] == [0.1, 0.2]
    path = plot_map_vs_time([run], tmp_path / "plot.png")
    assert path.stat().st_size > 5000


def test_cli_series_keep_their_order_and_points_parse(tmp_path):
    from facemask_tools.training.plots import plot_map_vs_time, runs_from_specs

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"history": [{"train_minutes_total": 3.0, "val": {"map50": 0.3, "map": 0.2}}]}))
    runs = runs_from_specs(
        [("points", "earlier=1:0.1:0.05,2:0.2:0.1"), ("run", f"run={metrics}@4"), ("points", "result=9:0.5:0.3")]
    )
    assert [r["label"] for r in runs] == ["earlier", "run", "result"]
    assert runs[0]["minutes"] == [1.0, 2.0] and runs[0]["map"] == [0.05, 0.1]
    assert runs[1]["start_minutes"] == 4.0 and runs[1]["map50"] == [0.3]
    assert runs[2] == {"label": "result", "minutes": [9.0], "map50": [0.5], "map": [0.3]}
    assert plot_map_vs_time(runs, tmp_path / "plot.png").stat().st_size > 5000


def test_by_size_plot_draws_each_evaluation(tmp_path):
    import json

    from facemask_tools.training.plots import plot_by_size

    bucket = {"faces": 4, "found": 2, "right_class": 1, "found_share": 0.5, "right_class_share": 0.5, "confusion": {}}
    empty = {"faces": 0, "found": 0, "right_class": 0, "found_share": None, "right_class_share": None, "confusion": {}}
    report = {
        "by_size": {
            "iou_threshold": 0.3,
            "score_threshold": 0.3,
            "buckets": {"<0.06": bucket, "0.06-0.12": empty, ">0.5": bucket},
        }
    }
    path = plot_by_size([("a", report), ("b", json.loads(json.dumps(report)))], tmp_path / "by-size.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_cli_draws_the_series_in_command_line_order(tmp_path, monkeypatch):
    """`facemask-sdk dev plots`: --run and --points interleaved reach the plot in the order given (the legend's)."""
    from click.testing import CliRunner

    from facemask_tools.dev import dev
    from facemask_tools.training import plots

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"history": [{"train_minutes_total": 3.0, "val": {"map50": 0.3, "map": 0.2}}]}))
    drawn = []
    monkeypatch.setattr(plots, "plot_map_vs_time", lambda runs, out: drawn.append((runs, out)) or out)
    args = ["--points", "b=1:0.1:0.05", "--run", f"a={metrics}@4", "--points", "c=9:0.5:0.3", "--run", f"d={metrics}"]
    result = CliRunner().invoke(dev, ["plots", *args, "--out", str(tmp_path / "plot.png")])
    assert result.exit_code == 0, result.output
    ((runs, out),) = drawn
    assert [run["label"] for run in runs] == ["b", "a", "c", "d"] and out == tmp_path / "plot.png"
    assert runs[1]["start_minutes"] == 4.0 and runs[2]["minutes"] == [9.0]
    bad = CliRunner().invoke(dev, ["plots", "--points", "e=1:0.1", "--out", str(tmp_path / "plot.png")])
    assert bad.exit_code == 2 and "MIN:MAP50:MAP" in bad.output
