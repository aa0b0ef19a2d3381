"""`facemask-sdk dev`: one group for the developer tools of all three tooling packages. Its help lists every
tool without importing any of them (no torch), each tool loads as its own click command, a light tool runs
end to end through the group, and bad input is an error with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TOOL_NAMES = [
    "compact-data",
    "plots",
    "average",
    "class-offset",
    "ship",
    "measure-precision",
    "train-speed",
    "tracking-clips",
    "anchor-coverage",
    "serve-env",
    "soak",
    "tracker",
    "input-size",
    "serving-load",
]
HEAVY = ("torch", "effdet", "timm", "onnx", "onnxruntime", "matplotlib", "tensorrt", "pycuda", "cv2")


def test_help_lists_every_tool_and_imports_none_of_them(fresh_python):
    code = (
        "import json, sys\n"
        "from facemask_tools.dev import dev\n"
        "try:\n"
        "    dev(['--help'], prog_name='facemask-sdk dev')\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "tools = sorted(m for m in sys.modules if m.startswith('facemask_tools.') and m != 'facemask_tools.dev')\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'tools': tools}))\n"
    )
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
    help_text, report = result.stdout.rsplit("\n", 2)[0], json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": [], "tools": []}, report
    listed = [
        line.split()[0]
        for line in help_text.split("Commands:")[1].splitlines()
        if line.startswith("  ") and line[2] != " "
    ]
    assert listed == TOOL_NAMES
    assert "Developer tools" in help_text


def test_every_tool_is_a_click_command_of_its_name_with_no_other_way_to_run_it():
    import importlib

    import click
    from click.testing import CliRunner

    from facemask_tools.dev import TOOLS, dev

    assert list(TOOLS) == TOOL_NAMES
    loaded = []
    for name, (module, attribute, _, _) in TOOLS.items():
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert '__name__ == "__main__"' not in source, f"{module} still runs as a script"
        try:
            importlib.import_module(module)
        except ImportError:  # an optional package this environment lacks: its stand-in is tested elsewhere
            continue
        command = dev.get_command(click.Context(dev), name)
        assert isinstance(command, click.Command) and command.name == name, (name, command)
        assert command is getattr(importlib.import_module(module), attribute)
        help_run = CliRunner().invoke(dev, [name, "--help"])
        assert help_run.exit_code == 0 and f"Usage: dev {name} " in help_run.output, help_run.output
        loaded.append(name)
    assert "anchor-coverage" in loaded and "compact-data" in loaded, loaded


def test_anchor_coverage_runs_end_to_end_through_the_group(run_dev):
    from facemask_sdk.voc import VocDataset
    from facemask_tools.benchmarks.anchor_coverage import coverage

    result = run_dev(["anchor-coverage", "--data", SAMPLES, "--split", "all", "--scales", "2,3"], timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["2", "3"]
    records = VocDataset(SAMPLES, "all").records
    for row, scale in zip(rows, (2.0, 3.0)):
        assert row.split("|")[-2].strip() == f"{coverage(records, 512, scale)['all']:.1%}"
    assert f"{sum(len(r.boxes) for r in records)} faces at 512 px" in result.stdout


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["anchor-coverage", "--image-size", "big"], "Invalid value for '--image-size'"),
        (["input-size", "x.pt", "--sizes", "512,600"], "multiples of 128"),
        (["serving-load", "--onnx", "missing.onnx", "--python", "python"], "Invalid value for '--onnx'"),
        (["compact-data", SAMPLES, SAMPLES], f"error: {SAMPLES} exists; remove it or choose another target"),
        (["no-such-tool"], "No such command 'no-such-tool'"),
    ],
)
def test_bad_input_is_an_error_with_exit_code_2(run_dev, args, stderr):
    result = run_dev(args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert stderr in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_missing_package_is_one_error_line_naming_the_tool_and_its_extra():
    code = (
        "import sys; sys.modules['torch'] = None; from facemask_tools.dev import dev; "
        "dev(['average', 'a.pt', 'b.pt', '--out', 'c.pt'], prog_name='facemask-sdk dev')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: 'dev average' needs the Python package 'torch', which is not installed: pip install 'facemask-sdk[train]'"
    ]


def test_the_group_is_the_dev_entry_point_of_facemask_sdk():
    import tomllib

    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["facemask_sdk.commands"]["dev"] == "facemask_tools.dev:dev [all]"


def test_facemask_sdk_dev_lists_the_tools_when_installed(run_cli):
    from facemask_sdk.cli.main import tooling_commands

    if "dev" not in tooling_commands():
        pytest.skip("the installed metadata predates the dev entry point: reinstall (pip install -e .)")
    result = run_cli(["dev", "--help"])
    assert result.returncode == 0, result.stderr
    assert all(f"  {name} " in result.stdout for name in TOOL_NAMES), result.stdout
    top = run_cli(["--help"])
    assert "  dev " in top.stdout and "Developer tools" in top.stdout
