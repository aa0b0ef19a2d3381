"""The benchmark harness (facemask_tools.benchmarks.harness): one real `facemask-sdk bench` on two sample images
whose reports and numbers agree with each other, the goal table, latency statistics, config checks.
Benchmarks are not tests: nothing here checks how fast anything is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.errors import FacemaskError
from facemask_tools.benchmarks.harness import BenchConfig, evaluate_goals, latency_stats
from facemask_tools.benchmarks.runners import BASELINE

SAMPLES = Path(__file__).resolve().parents[2] / "samples"  # a small VOC folder: images/ + annotations/
STAGE_NAMES = ("preprocess", "inference", "postprocess")
PEER = "peer-yolo11n-ort-fp32"
SELECTED = (BASELINE, "ort-cpu-fp32", "ort-cpu-fp16", PEER, "trt-int8")


@pytest.fixture(scope="module")
def bench_run(tiny_checkpoint, tiny_onnx, tmp_path_factory, run_cli):
    """One real `facemask-sdk bench` on two sample images; (completed process, bench.json, out folder)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    done = run_cli(
        [
            "bench",
            "--model",
            tiny_onnx,
            "--checkpoint",
            tiny_checkpoint,
            "--data",
            SAMPLES,
            "--split",
            "all",
            "--images",
            "2",
            "--warmup",
            "1",
            "--iterations",
            "2",
            "--batch",
            "2",
            "--threads",
            "1",
            "--runners",
            ",".join(SELECTED),
            "--out",
            out,
            "--no-progress",
        ]
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done, json.loads((out / "bench.json").read_text()), out


def _rows(result: dict) -> dict[str, dict]:
    return {row["name"]: row for row in result["runners"]}


def test_writes_the_three_reports(bench_run):
    done, result, out = bench_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "bench.md").read_text()
    for name in (BASELINE, "ort-cpu-fp32"):
        assert f"| {name} |" in markdown
        assert name in done.stdout
    assert "## Goals" in markdown and "## Not measured" in markdown
    assert result["dataset"]["images"] == 2 and result["protocol"]["timed_passes"] == 2
    assert result["machine"]["cpu_model"] and result["machine"]["logical_cpus"] >= 1
    assert "numpy" in result["libraries"] and result["protocol"]["threads"] == 1


def test_skipped_runners_say_why(bench_run):
    done, result, _ = bench_run
    rows = _rows(result)
    assert list(rows) == list(SELECTED)
    for name in ("ort-cpu-fp16", "trt-int8"):
        assert rows[name]["status"] == "skipped"
        assert rows[name]["reason"]
        assert f"skipped {name}: {rows[name]['reason']}" in done.stdout
    assert "fp16.onnx" in rows["ort-cpu-fp16"]["reason"]


def test_speed_figures_are_consistent(bench_run):
    _, result, _ = bench_run
    rows = _rows(result)
    base_mean = rows[BASELINE]["latency_ms"]["end_to_end"]["mean"]
    for name in (BASELINE, "ort-cpu-fp32"):
        row = rows[name]
        assert row["status"] == "ok"
        latency, samples = row["latency_ms"], row["samples_ms"]
        e2e = np.asarray(samples["end_to_end_ms"])
        assert len(e2e) == 2 * 2  # images x iterations
        assert latency["end_to_end"]["mean"] == pytest.approx(e2e.mean(), rel=1e-5)
        assert latency["end_to_end"]["p50"] <= latency["end_to_end"]["p90"] <= latency["end_to_end"]["p99"]
        assert row["fps"] == pytest.approx(1000.0 / latency["end_to_end"]["mean"])
        assert row["speedup"] == pytest.approx(base_mean / latency["end_to_end"]["mean"])
        stage_sum = sum(np.asarray(samples[f"{stage}_ms"]) for stage in STAGE_NAMES)
        assert np.all(stage_sum <= e2e + 1e-3)  # each call's stages fit inside its wall time
        means = sum(latency[stage]["mean"] for stage in STAGE_NAMES)
        assert row["overhead_ms"] == pytest.approx(latency["end_to_end"]["mean"] - means)
        assert row["pre_post_share"] == pytest.approx(
            (latency["preprocess"]["mean"] + latency["postprocess"]["mean"]) / latency["end_to_end"]["mean"]
        )
        assert row["memory"]["peak_rss_mb"] >= row["memory"]["rss_before_load_mb"] > 0
    assert rows[BASELINE]["speedup"] == pytest.approx(1.0)
    assert rows["ort-cpu-fp32"]["torch_imported"] is False  # isolation: the ORT process never loads torch


def test_the_peer_row_is_timed_like_ours_and_never_scored(bench_run):
    done, result, out = bench_run
    row = _rows(result)[PEER]
    if row["status"] == "skipped":  # ultralytics is not a dependency of anything here
        assert "needs ultralytics" in row["reason"], row["reason"]
        pytest.skip(f"the peer row was skipped: {row['reason']}")
    assert row["status"] == "ok", row.get("reason")
    assert row["accuracy"] is None and "speedup" in row and row["fps"] > 0
    assert row["info"]["image_size"] == _rows(result)["ort-cpu-fp32"]["info"]["image_size"], "same input size"
    assert len(row["samples_ms"]["end_to_end_ms"]) == 2 * 2
    assert row["batch_skip_reason"] == "the peer is exported with batch 1"
    markdown = (out / "bench.md").read_text()
    accuracy, speed = markdown.split("## Speed")[0], markdown.split("## Speed")[1].split("## Memory")[0]
    assert f"| {PEER} |" not in accuracy and f"| {PEER} |" in speed
    assert "speed only" in markdown
    assert "file" not in row and f"| {PEER} |" in markdown.split("## Memory")[1], "no file facts of ours on the peer"


def test_batch_figures(bench_run):
    _, result, _ = bench_run
    rows = _rows(result)
    batch = rows[BASELINE]["batch"]
    assert batch["batch"] == 2 and batch["images"] == 2 * 2
    assert batch["fps"] == pytest.approx(1000.0 / batch["latency_per_image_ms"])
    assert batch["speedup"] == pytest.approx(1.0)
    # The tiny export has a static batch of 1: no batched figure, and the report says why.
    assert rows["ort-cpu-fp32"].get("batch") is None
    assert "static batch" in rows["ort-cpu-fp32"]["batch_skip_reason"]


def test_accuracy_uses_the_same_metric_for_all(bench_run):
    _, result, _ = bench_run
    rows = _rows(result)
    base = rows[BASELINE]["accuracy"]
    for name in (BASELINE, "ort-cpu-fp32"):
        accuracy = rows[name]["accuracy"]
        assert 0.0 <= accuracy["map"] <= 1.0 and 0.0 <= accuracy["map50"] <= 1.0
        assert set(accuracy["ap50_per_class"]) == set(result["dataset"]["classes"])
        assert accuracy["images"] == 2 and accuracy["ground_truth_boxes"] == result["dataset"]["ground_truth_boxes"]
        assert accuracy["delta_map_pt"] == pytest.approx(100 * (accuracy["map"] - base["map"]))
    assert result["protocol"]["accuracy_score_threshold"] == 0.001


def test_goals_are_reported(bench_run):
    _, result, _ = bench_run
    goals = {goal["goal"].split()[0]: goal for goal in result["goals"]}
    assert len(result["goals"]) == 3
    assert goals["ort-cpu-int8"]["status"] == "not evaluated" and "not selected" in goals["ort-cpu-int8"]["detail"]
    assert all(goal["status"] in ("met", "missed", "not evaluated") for goal in result["goals"])


def _row(name, map_, mean, pre=0.5, post=0.5, status="ok"):
    if status != "ok":
        return {"name": name, "status": status, "reason": "why"}
    return {
        "name": name,
        "status": "ok",
        "speedup": 1.0,
        "accuracy": {"map": map_, "delta_map_pt": None},
        "latency_ms": {"end_to_end": {"mean": mean}, "preprocess": {"mean": pre}, "postprocess": {"mean": post}},
        "pre_post_share": (pre + post) / mean,
    }


def _with_deltas(rows):
    base = rows[0]
    for row in rows:
        if row["status"] == "ok":
            row["speedup"] = base["latency_ms"]["end_to_end"]["mean"] / row["latency_ms"]["end_to_end"]["mean"]
            row["accuracy"]["delta_map_pt"] = 100 * (row["accuracy"]["map"] - base["accuracy"]["map"])
    return rows


@pytest.mark.parametrize(
    "fp32, int8, expected",
    [
        (_row("ort-cpu-fp32", 0.500, 30.0), _row("ort-cpu-int8", 0.495, 20.0), ["met", "met", "met"]),
        (_row("ort-cpu-fp32", 0.500, 50.0), _row("ort-cpu-int8", 0.480, 20.0), ["missed", "missed", "met"]),
        (
            _row("ort-cpu-fp32", 0.503, 30.0, post=5.0),
            _row("ort-cpu-int8", 0.5, 20.0, status="skipped"),
            ["missed", "not evaluated", "missed"],
        ),
    ],
)
def test_goal_table(fp32, int8, expected):
    rows = _with_deltas([_row(BASELINE, 0.500, 100.0), fp32, int8])
    goals = evaluate_goals(rows)
    assert [g["status"] for g in goals] == expected
    for goal in goals:
        if goal["status"] == "missed":
            assert "missed by" in goal["detail"]


def test_goals_are_data_read_from_one_file(tmp_path):
    from facemask_tools.benchmarks.harness import GOALS, load_goals

    assert GOALS == {
        "fp32_speedup_over_baseline": 3.0,
        "fp32_map_difference_pt": 0.1,
        "int8_map_drop_pt": 1.0,
        "pre_post_share_of_latency": 0.1,
    }
    stricter = tmp_path / "goals.json"
    stricter.write_text(
        json.dumps(
            {
                name: {"minimum": value * (10 if name.startswith("fp32_speedup") else 0.1)}
                for name, value in GOALS.items()
            }
        )
    )
    rows = _with_deltas(
        [_row(BASELINE, 0.500, 100.0), _row("ort-cpu-fp32", 0.500, 30.0), _row("ort-cpu-int8", 0.495, 20.0)]
    )
    assert [g["status"] for g in evaluate_goals(rows)] == ["met", "met", "met"]
    assert [g["status"] for g in evaluate_goals(rows, load_goals(stricter))] == ["missed", "missed", "missed"]


def test_goals_without_baseline():
    goals = evaluate_goals([_row(BASELINE, 0, 0, status="skipped"), _row("ort-cpu-fp32", 0.5, 30.0)])
    assert [g["status"] for g in goals] == ["not evaluated", "not evaluated", "met"]


def test_stats_percentiles():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["p50"] == 2.5 and stats["n"] == 4
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert latency_stats([]) == {"n": 0}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"iterations": 0}, "iterations"),
        ({"warmup": -1}, "warmup"),
        ({"images": 0}, "images"),
        ({"threads": True}, "threads"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({}, None),
    ],
)
def test_config_validation(tmp_path, kwargs, error):
    def make():
        return BenchConfig(model=tmp_path / "m.onnx", checkpoint=None, data=tmp_path, **kwargs)

    if error is None:
        make()
    else:
        with pytest.raises(FacemaskError, match=error):
            make()
