"""Package structure: no import cycle, no function-level imports, every module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import exg_jax

PKG = Path(exg_jax.__file__).parent
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__",))

# The README's order ("Modules import only modules above them"): a module may
# only import modules of an earlier layer.
LAYERS = [
    {"_validate", "_numerics", "_typing", "_series", "_leadfield"},
    {"linalg", "status", "_spectral"},
    {
        "sphere",
        "covariance",
        "montage",
        "source_space",
        "forward",
        "source_estimate",
        "reductions",
        "cache",
    },
    {"sphere_forward", "kernel", "spectral", "templates"},
    {"methods", "_stream"},
    {"eloreta"},
    {"inverse"},
    {"regularization", "source_power", "interop"},
    {"resolution", "snr", "headfit"},
    {"beamformer", "viz"},
    {"cli"},
    {"__main__"},
]


def _layer(name):
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(
        f"module {name} is not placed in LAYERS (tests/test_package.py)"
    )


def _is_type_checking(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name):
    """(module-level exg_jax imports, function-level ones) of ``exg_jax/<name>.py``."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    top, nested = set(), set()

    def target(node):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            return (
                {node.module.split(".")[0]}
                if node.module
                else {a.name for a in node.names}
            )
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "exg_jax."
        ):
            return {node.module.split(".")[1]}
        return set()

    def visit(node, in_function):
        if _is_type_checking(node):
            return  # annotations only, never executed
        if isinstance(node, ast.ImportFrom):
            (nested if in_function else top).update(target(node))
        for child in ast.iter_child_nodes(node):
            visit(
                child,
                in_function
                or isinstance(
                    node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                ),
            )

    visit(tree, False)
    return top, nested


@pytest.mark.parametrize("name", MODULES)
def test_imports_only_earlier_layers(name):
    top, nested = _imports(name)
    for dep in top | nested:
        assert _layer(dep) < _layer(name), f"{name} imports {dep} (same or later layer)"


@pytest.mark.parametrize("name", [m for m in MODULES if m not in ("cli", "__main__")])
def test_no_function_level_imports(name):
    """Function-level imports of exg_jax modules would only hide a cycle."""
    _, nested = _imports(name)
    assert not nested, f"{name} imports {sorted(nested)} inside a function"


def test_every_module_imports_alone():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    if m == '__main__':\n"
        "        continue\n"
        "    for k in [k for k in sys.modules if k.startswith('exg_jax')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module('exg_jax.' + m)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PKG.parent,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_init_only_reexports():
    tree = ast.parse((PKG / "__init__.py").read_text())
    for node in tree.body:
        assert isinstance(node, ast.ImportFrom | ast.Import | ast.Assign | ast.Expr), (
            ast.unparse(node)
        )
        if isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            assert names <= {"__all__", "__version__"}
    for name in exg_jax.__all__:
        assert hasattr(exg_jax, name), name
