"""`facemask-sdk train` on tcmalloc: the command re-executes itself once with tcmalloc preloaded where it is
installed, never inside another program, and `--malloc libc` leaves the process as it started."""

from __future__ import annotations

import sys

import pytest

from facemask_sdk.errors import FacemaskError
from facemask_tools.training.allocator import find_tcmalloc, memory_allocator, started_as_command, use_tcmalloc

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc/self/maps are Linux-only")
# --epochs 0 is refused after the allocator is chosen: a real re-executed command, no training
REFUSED_RUN = ["train", "--data", "no-such-dataset"]
"""Refused in the command's body, after the allocator is chosen (options click refuses never get there)."""


@LINUX
def test_inside_another_program_nothing_is_replaced():
    assert not started_as_command()  # pytest's process
    assert use_tcmalloc("auto") == memory_allocator()


def test_unknown_choice_is_refused():
    with pytest.raises(FacemaskError, match="--malloc"):
        use_tcmalloc("mimalloc")


@LINUX
def test_command_reexecutes_onto_tcmalloc(run_cli, tmp_path):
    if find_tcmalloc() is None:
        pytest.skip("libtcmalloc is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
    done = run_cli([*REFUSED_RUN, "--out", tmp_path / "run"])
    assert done.returncode != 0 and "error: no-such-dataset is not a folder" in done.stderr
    assert done.stdout.splitlines()[0] == "malloc: tcmalloc"
    assert done.stdout.count("malloc:") == 1  # the first process printed nothing before it was replaced


@LINUX
def test_eval_reexecutes_onto_tcmalloc(run_cli, tmp_path):
    if find_tcmalloc() is None:
        pytest.skip("libtcmalloc is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not weights")
    done = run_cli(["eval", "--checkpoint", not_a_checkpoint, "--data", "samples", "--out", tmp_path / "eval"])
    assert done.returncode != 0 and done.stderr.startswith("error:")
    assert done.stdout.splitlines() == ["malloc: tcmalloc"]
    assert not_a_checkpoint.read_text() == "not weights"


@LINUX
def test_libc_choice_keeps_glibc_malloc(run_cli, tmp_path):
    done = run_cli([*REFUSED_RUN, "--out", tmp_path / "run", "--malloc", "libc"])
    assert done.returncode != 0 and "error: no-such-dataset is not a folder" in done.stderr
    assert done.stdout.splitlines()[0] == "malloc: libc"


@LINUX
def test_without_tcmalloc_auto_says_how_to_get_it(run_cli, tmp_path):
    if find_tcmalloc() is not None:
        pytest.skip("libtcmalloc is installed here: the glibc fallback of --malloc auto cannot be reached")
    done = run_cli([*REFUSED_RUN, "--out", tmp_path / "run"])
    assert "malloc: libc (" in done.stdout and "libtcmalloc-minimal4" in done.stdout
