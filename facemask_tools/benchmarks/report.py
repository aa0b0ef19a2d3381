"""Render a `run_benchmark` result: terminal table, `bench.json`, `bench.md` and `bench.png`.

>>> paths = write_reports(result, Path("runs/bench"))    # {"json": ..., "markdown": ..., "chart": ...}
>>> print(terminal_table(result))
"""

from __future__ import annotations

import json
from pathlib import Path

JSON_NAME, MARKDOWN_NAME, CHART_NAME = "bench.json", "bench.md", "bench.png"
OUTPUT_NAMES = (JSON_NAME, MARKDOWN_NAME, CHART_NAME)


def write_reports(result: dict, out: Path) -> dict[str, Path]:
    """Write the three files into `out` (created if needed); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "chart": out / CHART_NAME}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(markdown(result))
    chart(result, paths["chart"])
    return paths


def _f(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


NOT_SCORED = {"map": None, "delta_map_pt": None, "map50": None}
"""The accuracy cells of a speed-only peer."""


def _ok(result: dict) -> list[dict]:
    return [row for row in result["runners"] if row["status"] == "ok"]


def _speed_cells(row: dict) -> list[str]:
    lat = row["latency_ms"]
    batch = row.get("batch")
    return [
        _f(lat["end_to_end"]["p50"], ".1f"),
        _f(lat["end_to_end"]["p90"], ".1f"),
        _f(lat["end_to_end"]["p99"], ".1f"),
        _f(lat["preprocess"]["mean"], ".2f"),
        _f(lat["inference"]["mean"], ".1f"),
        _f(lat["postprocess"]["mean"], ".2f"),
        _f(row["pre_post_share"] * 100, ".1f", "%"),
        _f(row["fps"], ".2f"),
        _f(row["speedup"], ".2f", "x"),
        _f(batch["fps"], ".2f") if batch else "-",
    ]


SPEED_HEADER = ["e2e p50", "p90", "p99", "pre", "infer", "post", "pre+post", "FPS b1", "speed-up", "FPS bN"]


def terminal_table(result: dict) -> str:
    """Fixed-width summary for the terminal: one line per measured runner, then skips and goals."""
    header = ["runner", "mAP", "dmAP pt", "mAP50", *SPEED_HEADER, "peak RSS MB"]
    rows = [header]
    for row in _ok(result):
        acc = row["accuracy"] or NOT_SCORED
        rows.append(
            [
                row["name"],
                _f(acc["map"], ".4f"),
                _f(acc["delta_map_pt"], "+.2f"),
                _f(acc["map50"], ".4f"),
                *_speed_cells(row),
                _f(row["memory"]["peak_rss_mb"], ".0f"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    proto = result["protocol"]
    ds = result["dataset"]
    lines.append(
        f"{ds['images']} {ds['split']} images, {proto['warmup_calls']} warm-up calls, {proto['timed_passes']} timed "
        f"pass(es) at score threshold {proto['speed_score_threshold']}, batch {proto['batch']}, threads "
        f"{proto['threads']}; mAP at threshold {proto['accuracy_score_threshold']}; latencies in ms (stages: means); "
        f"decoding {_f(result['decode_ms'].get('mean'), '.2f')} ms/image, not included"
    )
    if result.get("busy_warning"):
        lines.append(f"warning: {result['busy_warning']}")
    for row in result["runners"]:
        if row["status"] != "ok":
            lines.append(f"{row['status']} {row['name']}: {row['reason']}")
    for goal in result["goals"]:
        lines.append(f"goal {goal['status'].upper()}: {goal['goal']}: {goal['detail']}")
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def markdown(result: dict) -> str:
    """`bench.md`: command, machine, accuracy, speed, memory, skipped runners, goals."""
    machine, proto, ds = result["machine"], result["protocol"], result["dataset"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in machine["gpus"]) or "none"
    lines = [
        "# facemask-sdk bench",
        "",
        f"Command: `{result.get('command', 'facemask-sdk bench')}`  ",
        f"Run: {result['created']}, {result['duration_s']} s, commit {result.get('git_commit') or 'unknown'}",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs ({machine['usable_cpus']} usable), "
        f"{_f(machine['memory_gb'], '.1f')} GB RAM; load average (1, 5, 15 min) at start "
        f"{machine.get('load_average_at_start')}, at the end {machine.get('load_average')}",
        f"- GPU: {gpus}",
        f"- {machine['os']}, Python {machine['python']}, malloc {machine.get('allocator', 'unknown')}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in result["libraries"].items()),
        "",
        "## Protocol",
        "",
        f"- Data: `{ds['root']}` split `{ds['split']}`, {ds['images']} images, {ds['ground_truth_boxes']} boxes; "
        f"the same decoded images for every runner.",
        f"- Accuracy: COCO mAP (`facemask_sdk.metrics`) of one pass at score threshold "
        f"{proto['accuracy_score_threshold']}, NMS IoU {proto['nms_iou']}, at most {proto['max_detections']} "
        f"detections per image, the same for every runner.",
        f"- Speed: {proto['warmup_calls']} warm-up calls, then {proto['timed_passes']} timed pass(es) over the images "
        f"at batch 1 with score threshold {proto['speed_score_threshold']} (the deployment setting); end-to-end = "
        f"{proto['end_to_end']}. FPS = 1000 / mean end-to-end ms; speed-up = baseline mean / runner mean, both from "
        f"this run. "
        + (f"Batch {proto['batch']} FPS where the runner batches. " if proto["batch"] > 1 else "")
        + f"'e2e @mAP' is the mean of the accuracy "
        f"pass (threshold {proto['accuracy_score_threshold']}: more boxes reach NMS).",
        f"- Image decoding (not in any figure above): mean {_f(result['decode_ms'].get('mean'), '.2f')} ms, "
        f"p50 {_f(result['decode_ms'].get('p50'), '.2f')} ms per image.",
        f"- Threads: {proto['threads']}. Isolation: {proto['isolation']}.",
        "",
        *([f"**Warning:** {result['busy_warning']}", ""] if result.get("busy_warning") else []),
        "## Accuracy",
        "",
    ]
    classes = ds["classes"]
    rows = []
    for row in _ok(result):
        if row["accuracy"] is None:
            continue  # a speed-only peer: in the speed table only
        acc = row["accuracy"]
        rows.append(
            [
                row["name"],
                _f(acc["map"], ".4f"),
                _f(acc["delta_map_pt"], "+.2f"),
                _f(acc["map50"], ".4f"),
                _f(acc["delta_map50_pt"], "+.2f"),
                *(_f(acc["ap50_per_class"].get(c), ".4f") for c in classes),
            ]
        )
    lines += _md_table(
        ["runner", "mAP@.5:.95", "vs baseline (pt)", "mAP@.5", "vs baseline (pt)", *(f"AP@.5 {c}" for c in classes)],
        rows,
    )
    lines += ["", "## Speed (ms; stage columns are means)", ""]
    lines += _md_table(
        ["runner", *SPEED_HEADER, "batch speed-up", "e2e @mAP"],
        [
            [
                row["name"],
                *_speed_cells(row),
                _f((row.get("batch") or {}).get("speedup"), ".2f", "x"),
                _f(row["accuracy_pass_ms"].get("mean"), ".1f"),
            ]
            for row in _ok(result)
        ],
    )
    lines += ["", "## Memory and load", ""]
    lines += _md_table(
        [
            "runner",
            "peak RSS MB",
            "RSS before load MB",
            "GPU MB (nvidia-smi)",
            "torch CUDA peak MB",
            "load s",
            "model file",
        ],
        [
            [
                row["name"],
                _f(row["memory"]["peak_rss_mb"], ".0f"),
                _f(row["memory"]["rss_before_load_mb"], ".0f"),
                _f(row["memory"]["gpu_process_mb"], ".0f"),
                _f(row["memory"]["torch_cuda_peak_allocated_mb"], ".0f"),
                _f(row["load_s"], ".2f"),
                f"{Path(row['path']).name} ({row['file']['size_mb']:.1f} MB, {row['file']['sha256']})"
                if "file" in row
                else f"exported at run time ({row['info'].get('weights', 'no file of ours')})",
            ]
            for row in _ok(result)
        ],
    )
    lines.append("")
    lines.append(
        "Peak RSS is each runner's own process (Python, NumPy, OpenCV and the decoded images included; "
        "'before load' is that part)."
    )
    notes = [(row["name"], note) for row in _ok(result) for note in row.get("notes", [])]
    batch_skips = [(row["name"], row["batch_skip_reason"]) for row in _ok(result) if row.get("batch_skip_reason")]
    if notes or batch_skips:
        lines += ["", "## Notes", ""]
        lines += [f"- {name}: {note}" for name, note in notes]
        lines += [f"- {name}: no batched figure: {reason}" for name, reason in batch_skips]
    skipped = [row for row in result["runners"] if row["status"] != "ok"]
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {row['name']} ({row['status']}): {row['reason']}" for row in skipped]
    lines += ["", "## Goals", ""]
    lines += [f"- **{g['status']}**: {g['goal']}: {g['detail']}" for g in result["goals"]]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> Path:
    """PNG: FPS vs mAP@.5:.95 per runner (left) and the mean stage split of each runner's latency (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _ok(result)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for row in rows:
        if row["accuracy"] is None:
            continue  # a speed-only peer has no place on the accuracy axis
        marker = "*" if row["baseline"] else "o"
        left.scatter(row["fps"], row["accuracy"]["map"], s=140 if row["baseline"] else 60, marker=marker)
        left.annotate(
            row["name"], (row["fps"], row["accuracy"]["map"]), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    left.set_xlabel("FPS at batch 1 (end-to-end, decoding excluded)")
    left.set_ylabel("mAP@0.5:0.95")
    left.set_ylim(0, 1)  # the full scale: a zoomed axis makes a 1-point difference look dramatic
    left.set_xlim(left=0)
    left.set_title("Accuracy vs speed (* = baseline)")
    left.grid(True, alpha=0.3)

    names = [row["name"] for row in rows]
    offsets = [0.0] * len(rows)
    for stage, color in (("preprocess", "tab:blue"), ("inference", "tab:orange"), ("postprocess", "tab:green")):
        values = [row["latency_ms"][stage]["mean"] for row in rows]
        right.barh(names, values, left=offsets, color=color, label=stage)
        offsets = [o + v for o, v in zip(offsets, values)]
    right.invert_yaxis()
    right.set_xlabel("mean latency per image (ms)")
    right.set_title("Where the time goes")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)  # below the bars
    cpu = result["machine"]["cpu_model"]
    fig.suptitle(
        f"facemask-sdk bench: {result['dataset']['images']} images of split {result['dataset']['split']}, {cpu}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
