"""A Python environment that can run the servers: the wheel plus its `[serve]` extra.

PyTriton needs numpy < 2 while the development environment has numpy 2, so the servers run from a
virtual environment of their own. It sees the packages of the interpreter that made it (a virtual
environment's as well as a bare interpreter's, behind its own) and adds only what `[serve]` asks for.
It is kept under `~/.cache/facemask-sdk/`, one per checkout, interpreter and requirements, built under a
file lock (two suites at once wait for each other instead of racing), so only the first run installs.
The wheel is reinstalled every time: the server imports the SDK as an installed package, the one being
tested.

    facemask-sdk dev serve-env dist/facemask_sdk-0.1.0-py3-none-any.whl   # prints its python
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import click

from facemask_tools.paths import CHECKOUT

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facemask-sdk"


def overlay_environment(env_dir: Path) -> Path:
    """A new virtual environment at `env_dir` that sees this interpreter's packages behind its own; its Python.

    `system_site_packages` alone would show the base interpreter's packages, not those of the virtual
    environment this runs in (OpenCV and the rest of the suite's dependencies were missing there): a
    `.pth` file adds this interpreter's site directories after the new environment's own."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    seen = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(own) / "facemask_parent_environment.pth").write_text("".join(f"{path}\n" for path in seen))
    return python


def serve_requirements(wheel: Path) -> list[str]:
    """The `[serve]` extra's requirements, from the wheel's own metadata (one source: pyproject)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    found = [
        match.group(1)
        for line in metadata.splitlines()
        if (match := re.match(r"Requires-Dist: (.+?)\s*;\s*extra\s*==\s*[\"']serve[\"']", line))
    ]
    if not found:
        raise RuntimeError(f"{wheel.name} declares no [serve] extra")
    return found


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def serve_environment(wheel: Path) -> Path:
    """The environment's Python, with `wheel` installed and numpy < 2 checked."""
    requirements = serve_requirements(wheel)
    identity = [sys.version, sys.prefix, str(CHECKOUT), *requirements]
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    env_dir = CACHE / f"serve-env-{key}"
    python = env_dir / "bin" / "python"
    installed = env_dir / ".installed"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"serve-env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not installed.is_file():
            overlay_environment(env_dir)
            _pip(python, *requirements)
            installed.write_text("\n".join(identity) + "\n")
        _pip(python, "--no-deps", "--force-reinstall", str(wheel))
    probe = subprocess.run(
        [str(python), "-c", "import numpy, pytriton, facemask_sdk; print(numpy.__version__, facemask_sdk.__file__)"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    if probe.returncode != 0:
        raise RuntimeError(f"the serving environment {env_dir} is broken:\n{probe.stderr[-2000:]}")
    numpy_version, package = probe.stdout.split()
    if not numpy_version.startswith("1."):
        raise RuntimeError(f"PyTriton needs numpy < 2; {env_dir} has {numpy_version}")
    if str(env_dir) not in package:
        raise RuntimeError(f"{env_dir} imports the SDK from {package}, not from its installed wheel")
    return python


@click.command("serve-env")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(wheel: Path) -> None:
    """The Python of an environment that runs the servers: WHEEL (a facemask-sdk wheel) plus its [serve]
    extra, made once under ~/.cache/facemask-sdk/ and reused; prints its python."""
    click.echo(serve_environment(wheel))
