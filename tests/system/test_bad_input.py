"""Bad input and faults, as a table: each row is a command line, the exit code it must give, a fragment
of its one `error:` line, and the files that must survive it untouched (issue 12's cases)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "facemask_sdk.cli.main"]
SAMPLES = ROOT / "samples"


def _earlier_run(tmp: Path) -> dict[str, bytes]:
    run = tmp / "run"
    run.mkdir()
    files = {"best.pt": b"weights of an earlier run", "metrics.json": b'{"best": 1}'}
    for name, data in files.items():
        (run / name).write_bytes(data)
    return {f"run/{name}": data for name, data in files.items()}


def _config_less_checkpoint(tmp: Path) -> dict[str, bytes]:
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {}, "spec": {}, "optimizer": {}, "step": 1, "total_steps": 2}, tmp / "noconfig.pt")
    return {}


def _predictions_png_of_the_user(tmp: Path) -> dict[str, bytes]:
    (tmp / "out").mkdir()
    (tmp / "out" / "predictions.png").write_bytes(b"a picture the user made")
    return {"out/predictions.png": b"a picture the user made"}


def _pickle_running_a_command(tmp: Path) -> dict[str, bytes]:
    """A bare pickle whose loading would overwrite the user's file with os.system: refused before it runs."""
    from bad_checkpoints import pickle_running

    (tmp / "victim.txt").write_bytes(b"the user's file")
    pickle_running(tmp / "evil.pt", f"echo owned > {tmp / 'victim.txt'}")
    return {"victim.txt": b"the user's file"}


def _zip_bomb_checkpoint(tmp: Path) -> dict[str, bytes]:
    """100 MiB of zeros as a checkpoint's pickle: refused from the zip directory."""
    from bad_checkpoints import zip_bomb

    zip_bomb(tmp / "bomb.pt", 100)
    return {}


def _onnx_with_other_heads(tmp: Path) -> dict[str, bytes]:
    """The shipped model's input and metadata, dynamic size, heads with as many rows as the input is high."""
    pytest.importorskip("onnx")
    from onnx_graphs import constant_heads_model

    constant_heads_model(ROOT / "models" / "facemask.onnx", tmp / "wrong.onnx", dynamic=True)
    return {}


CASES = [
    # id, args (TMP is the test folder), setup, exit code, fragment of the error/notice, needs
    (
        "out-not-creatable",
        ["detect", str(SAMPLES / "images"), "--out", "/sys/facemask-sdk-test"],
        None,
        2,
        "permission denied",
        ["onnxruntime"],
    ),
    (
        "out-under-a-file",
        ["detect", str(SAMPLES / "images"), "--out", "TMP/file.txt/out"],
        lambda tmp: (tmp / "file.txt").write_text("x") and {},
        2,
        "Not a directory",
        ["onnxruntime"],
    ),
    (
        "train-over-earlier-run",
        ["train", "--data", str(SAMPLES), "--out", "TMP/run", "--image-size", "128"],
        _earlier_run,
        2,
        "already holds a training run (best.pt, metrics.json)",
        ["torch", "effdet"],
    ),
    (
        "resume-without-config",
        ["train", "--out", "TMP/r", "--resume", "TMP/noconfig.pt"],
        _config_less_checkpoint,
        2,
        "lacks train_config",
        ["torch", "effdet"],
    ),
    (
        "conflicting-precisions",
        ["build-engine", "--fp16", "--int8", "--onnx-only"],
        None,
        2,
        "--fp16 and --int8 conflict",
        ["onnx"],
    ),
    (
        "bad-checkpoint",
        ["eval", "--checkpoint", str(ROOT / "README.md")],
        None,
        2,
        "not a readable PyTorch checkpoint",
        ["torch", "effdet"],
    ),
    # click's own refusals (ranges, unknown options and commands) are one error: line too, with where to look
    (
        "train-probability-out-of-range",
        ["train", "--out", "TMP/run", "--mosaic", "1.5"],
        None,
        2,
        "'--mosaic': 1.5 is not in the range 0.0<=x<=1.0. (see '",
        [],
    ),
    (
        "unknown-option-of-a-dev-tool",
        ["dev", "anchor-coverage", "--bogus"],
        None,
        2,
        "No such option '--bogus'. (see '",
        [],
    ),
    ("unknown-command", ["bogus"], None, 2, "No such command 'bogus'. (see '", []),
    # issue 33's smaller cases
    (
        "eval-over-the-users-predictions-png",
        ["eval", "--checkpoint", str(ROOT / "models" / "facemask.pt"), "--data", str(SAMPLES), "--out", "TMP/out"],
        _predictions_png_of_the_user,
        2,
        "already holds predictions.png; pass --force",
        ["torch", "effdet"],
    ),
    (
        "checkpoint-that-would-run-a-command",
        ["eval", "--checkpoint", "TMP/evil.pt", "--data", str(SAMPLES)],
        _pickle_running_a_command,
        2,
        "could run code",
        ["torch", "effdet"],
    ),
    (
        "checkpoint-zip-bomb",
        ["eval", "--checkpoint", "TMP/bomb.pt", "--data", str(SAMPLES)],
        _zip_bomb_checkpoint,
        2,
        "would unpack to 100 MiB",
        ["torch", "effdet"],
    ),
    (
        "onnx-with-the-right-input-and-other-heads",
        ["detect", str(SAMPLES / "images"), "--model", "TMP/wrong.onnx", "--out", "TMP/out"],
        _onnx_with_other_heads,
        2,
        "output 'logits' has shape [1, 768, 3]; the model spec says [N, 110484, 3]",  # pinned to 768 px at load
        ["onnxruntime"],
    ),
]


@pytest.mark.parametrize(("case", "args", "setup", "code", "fragment", "needs"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_keeps_files(tmp_path, case, args, setup, code, fragment, needs):
    for module in needs:
        pytest.importorskip(module)
    survivors = (setup(tmp_path) or {}) if setup else {}
    result = subprocess.run(
        CLI + [a.replace("TMP", str(tmp_path)) for a in args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == code, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr
    for name, data in survivors.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} was changed"


def test_an_image_bomb_is_skipped_and_named_and_the_rest_is_detected(tmp_path, png_declaring):
    """A 60000x60000 PNG header among good images: named in one line, never decoded (memory stays small),
    the good image is processed and summary.json lists the failure."""
    pytest.importorskip("onnxruntime")
    import json

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bomb.png").write_bytes(png_declaring(60000, 60000))
    good = sorted((SAMPLES / "images").glob("*.png"))[0]
    (inputs / good.name).write_bytes(good.read_bytes())
    result = subprocess.run(
        CLI + ["detect", str(inputs), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "image too large" in result.stderr and "bomb.png" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 1 and (tmp_path / "out" / good.name).is_file()
    assert (inputs / "bomb.png").stat().st_size < 2000  # the input is untouched


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["train", "--out", "x", "--epochs", "0"], "(see 'facemask-sdk train --help')"),
        (["dev", "anchor-coverage", "--bogus"], "(see 'facemask-sdk dev anchor-coverage --help')"),
        (["bogus"], "(see 'facemask-sdk --help')"),
        (["--bogus"], "(see 'facemask-sdk --help')"),  # the top-level group's own options
    ],
)
def test_a_refused_option_names_the_help_of_its_own_command(args, hint):
    """The hint points at the (sub)command whose option was refused, nested groups included."""
    from click.testing import CliRunner

    from facemask_sdk.cli.main import cli

    result = CliRunner().invoke(cli, args, prog_name="facemask-sdk")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.rstrip().endswith(hint)


def test_a_bare_group_shows_its_help_not_an_error():
    from click.testing import CliRunner

    from facemask_sdk.cli.main import cli

    result = CliRunner().invoke(cli, ["dev"], prog_name="facemask-sdk")
    assert "Usage: facemask-sdk dev" in result.output and "anchor-coverage" in result.output
    assert "error:" not in result.output + result.stderr


@pytest.mark.parametrize(
    ("command", "needs"),
    [
        (["data-info", "TMP/data"], []),
        (
            ["eval", "--checkpoint", str(ROOT / "models" / "facemask.pt"), "--data", "TMP/data", "--out", "TMP/e"],
            ["torch", "effdet"],
        ),
        (
            ["train", "--data", "TMP/data", "--out", "TMP/run", "--image-size", "128", "--batch-size", "2"]
            + ["--max-steps", "1", "--epochs", "1", "--pretrained", "none", "--threads", "1"],
            ["torch", "effdet"],
        ),
    ],
    ids=["data-info", "eval", "train"],
)
def test_an_image_bomb_in_a_dataset_is_skipped_and_named_and_the_rest_is_used(tmp_path, png_declaring, command, needs):
    """A 60000x60000 PNG (with its annotation) among the samples: every dataset reader names it once and goes on with
    the others, from the header alone (never decoded: the run's memory stays that of the good images)."""
    import shutil

    for module in needs:
        pytest.importorskip(module)
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data, ignore=shutil.ignore_patterns("clip-faces"))
    (data / "images" / "bomb.png").write_bytes(png_declaring(60000, 60000))
    xml = next((data / "annotations").glob("*.xml")).read_text()
    (data / "annotations" / "bomb.xml").write_text(
        re.sub("<filename>.*?</filename>", "<filename>bomb.png</filename>", xml)
    )
    result = subprocess.run(
        CLI + [a.replace("TMP", str(tmp_path)) for a in command], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    named = [line for line in output.splitlines() if "bomb.png" in line]
    assert len(named) == 1 and "image too large" in named[0] and "skipped" in named[0], output[-2000:]
    assert "Traceback" not in output


@pytest.mark.skipif(not hasattr(__import__("os"), "symlink"), reason="needs symbolic links")
def test_detect_through_a_symlink_loop_reads_each_image_once(tmp_path):
    """`detect 'a/**/*.png'` over folders that link back to their parents: each image once, and it ends."""
    import json
    import os

    pytest.importorskip("onnxruntime")
    image = sorted((SAMPLES / "images").glob("*.png"))[0]
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / image.name).write_bytes(image.read_bytes())
    for name in ("up", "up2"):
        os.symlink("..", tmp_path / "a" / "b" / name)
    result = subprocess.run(
        CLI + ["detect", str(tmp_path / "a" / "**" / "*.png"), "--out", str(tmp_path / "out"), "--no-media"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 1
