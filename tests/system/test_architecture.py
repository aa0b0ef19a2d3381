"""The layering the README describes, read from the source (AST, nothing imported): no import cycle
between project modules, and a runtime (`facemask_sdk`) that neither imports nor names its tooling;
and, in a fresh interpreter, a runtime that never loads torch, ONNX or effdet."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("facemask_sdk", "facemask_tools")
"""The two top-level packages; every module's import name is its path under the checkout."""
PACKAGES = {
    "facemask_sdk",
    "facemask_tools",
    "facemask_tools.training",
    "facemask_tools.build_engine",
    "facemask_tools.benchmarks",
}
TOOLING_NAMES = ("facemask_tools", "training.", "build_engine.", "benchmarks.")


def _modules() -> dict[str, Path]:
    modules = {}
    for top in TOP_LEVEL:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def test_every_package_is_the_folder_of_its_name() -> None:
    """No `package-dir` mapping of code: an import resolves to the folder it names (grep, editors and
    import-graph tools can follow it); the one mapping left is the shipped models, data."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config.get("package-dir", {})) <= {"facemask_sdk.shipped"}, config["package-dir"]
    for package in config["packages"]:
        if package != "facemask_sdk.shipped":
            assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), f"{package} is not a folder"
    code_folders = {
        path.parent.relative_to(ROOT).as_posix().replace("/", ".") for path in ROOT.glob("facemask_*/**/*.py")
    }
    assert code_folders <= set(config["packages"]), sorted(code_folders - set(config["packages"]))


def test_the_tooling_depends_the_documented_way() -> None:
    """training depends on no other tooling package; build_engine and benchmarks may use training."""
    modules = _modules()
    found = {
        (name.split(".")[1], dep.split(".")[1])
        for name, path in modules.items()
        if name.startswith("facemask_tools.") and name.count(".") >= 2
        for dep in _imports(path, modules)
        if dep.startswith("facemask_tools.") and dep.count(".") >= 2 and dep.split(".")[1] != name.split(".")[1]
    }
    assert {(a, b) for a, b in found if a == "training"} == set(), found
    assert found <= {("build_engine", "training"), ("benchmarks", "training"), ("benchmarks", "build_engine")}, found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports at any level (function-level imports included; imports under
    `if TYPE_CHECKING:` are for annotations only and never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def test_no_import_cycle_between_project_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules lazily is not a cycle of logic: leave packages out
    graph = {name: {dep for dep in deps if dep not in PACKAGES} for name, deps in graph.items() if name not in PACKAGES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep) :] + [dep] if dep in trail else [name, dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_runtime_neither_imports_nor_names_its_tooling() -> None:
    offenders = []
    for path in sorted((ROOT / "facemask_sdk").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [
                    f"{path.name}: import {n}"
                    for n in names
                    if n.split(".")[0]
                    in ("facemask_tools", "training", "build_engine", "benchmarks", "torch", "effdet", "onnx")
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                offenders += [
                    f"{path.name}: names {node.value!r}" for prefix in TOOLING_NAMES if node.value.startswith(prefix)
                ]
    assert not offenders, offenders


def test_runtime_never_imports_torch_onnx_or_effdet(fresh_python) -> None:
    code = (
        "import sys, facemask_sdk\n"
        "assert 'cv2' not in sys.modules and 'onnxruntime' not in sys.modules, 'import facemask_sdk is not light'\n"
        "import facemask_sdk.detector, facemask_sdk.backends.onnxrt, facemask_sdk.sources, facemask_sdk.cli.detect\n"
        "from facemask_sdk import Detector, Detections, annotate\n"
        "heavy = ('torch', 'effdet', 'onnx', 'timm', 'tensorrt', 'pycuda')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
