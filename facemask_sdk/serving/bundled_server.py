"""Start the tritonserver that PyTriton bundles (Python backend only) on a generated model repository.

NGC's tritonserver images are the production host of the repository; this is the one that installs
from PyPI (`facemask-sdk[serve]`), so tests and the load benchmark run a real server anywhere. It
needs what PyTriton arranges for its own server: the Python stub for this interpreter in the backend
folder, the bundled libraries, this interpreter's `libpython` first on `LD_LIBRARY_PATH` (the stub
otherwise binds the system one and fails), and this interpreter first on `PATH` (the stub imports the
SDK through the `python3` it finds there).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from facemask_sdk.errors import FacemaskError

PYTRITON_MISSING = "serving needs the 'nvidia-pytriton' package: pip install 'facemask-sdk[serve]'"


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise FacemaskError(PYTRITON_MISSING) from None
    return Path(pytriton.__file__).parent


def interpreter_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with this interpreter's libpython and `python3`
    first, as Triton's Python stub needs them."""
    env = dict(os.environ if base is None else base)
    for name, first in (
        ("LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR") or ""),
        ("PATH", str(Path(sys.executable).parent)),
    ):
        entries = [entry for entry in env.get(name, "").split(os.pathsep) if entry and entry != first]
        env[name] = os.pathsep.join([first, *entries] if first else entries)  # idempotent: first once
    return env


def server_command(
    repository: str | Path, workdir: str | Path, host: str, http_port: int, grpc_port: int
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a tritonserver on `repository`, bound to `host`; `workdir` receives its
    backend folder (with the stub for this Python version). Metrics are off."""
    root = _pytriton_root()
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FacemaskError(f"PyTriton has no Triton Python stub for Python {version} ({stub})")
    backends = Path(workdir) / "backends"
    shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    libs = root.parent / "nvidia_pytriton.libs"
    env = interpreter_environment()
    env["LD_LIBRARY_PATH"] = os.pathsep.join((env["LD_LIBRARY_PATH"], str(libs)))
    argv = [
        str(dist / "bin" / "tritonserver"),
        f"--model-repository={Path(repository).resolve()}",
        f"--backend-directory={backends}",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--log-verbose=0",
    ]
    return argv, env


def main(argv: list[str] | None = None) -> None:
    """`python -m facemask_sdk.serving.bundled_server REPOSITORY WORKDIR HOST HTTP_PORT GRPC_PORT`:
    becomes that tritonserver (exec), so the caller's PID is the server's and SIGTERM stops it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 5:
        sys.exit("usage: python -m facemask_sdk.serving.bundled_server REPOSITORY WORKDIR HOST HTTP_PORT GRPC_PORT")
    try:
        command, env = server_command(args[0], args[1], args[2], int(args[3]), int(args[4]))
    except (FacemaskError, ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
