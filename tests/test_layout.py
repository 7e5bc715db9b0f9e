"""The backend rule, checked on the source: only backend.py chooses NumPy or CuPy.

Layers, optimizers, models and kernels' launch code get their array module from their inputs
(``get_array_module``) or from ``tinyalexnet.backend``; if one of them imported
numpy itself, it would silently run on the CPU inside a GPU step.  Nor may they
borrow another module's numpy (``init.np``, ``from ..init import np``): that is
the same import by a back door.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinyalexnet"
ARRAY_CODE = sorted(p for folder in ("layers", "optim", "models", "kernels")
                    for p in (PACKAGE / folder).glob("*.py"))


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


ARRAY_MODULE_NAMES = {"numpy", "np", "cupy", "cp"}


def _borrowed_array_modules(path):
    """``init.np``-style attribute reads and ``from X import np`` with X not the backend."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ARRAY_MODULE_NAMES
                and not (isinstance(node.value, ast.Name) and node.value.id == "backend")):
            yield f"line {node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] != "backend":
            for alias in node.names:
                if alias.name in ARRAY_MODULE_NAMES:
                    yield f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"


def test_there_is_array_code_to_check():
    names = {p.name for p in ARRAY_CODE}
    assert {"conv.py", "pool.py", "lrn.py", "sgd.py", "alexnet.py", "maxpool.py"} <= names, names


@pytest.mark.parametrize("path", ARRAY_CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_array_code_does_not_import_numpy_or_cupy(path):
    imported = set(_imported_modules(path)) & {"numpy", "cupy"}
    assert not imported, (f"{path.relative_to(PACKAGE.parent)} imports {sorted(imported)}: "
                          "take xp = get_array_module(x) (or tinyalexnet.backend) instead")


@pytest.mark.parametrize("path", ARRAY_CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_array_code_does_not_borrow_numpy_from_another_module(path):
    borrowed = list(_borrowed_array_modules(path))
    assert not borrowed, (f"{path.relative_to(PACKAGE.parent)} reaches an array module through "
                          f"another module: {borrowed}; use tinyalexnet.backend (or init's "
                          "functions for new parameters)")


@pytest.mark.parametrize("source", ["w = init.np.zeros(3)", "from ..init import np",
                                    "from tinyalexnet import init\nz = init.numpy.ones(2)",
                                    "import tinyalexnet.init as i\nx = i.cp.zeros(1)"])
def test_the_back_door_check_sees_a_borrowed_numpy(tmp_path, source):
    path = tmp_path / "layer.py"
    path.write_text(source + "\n")
    assert list(_borrowed_array_modules(path))


def test_the_back_door_check_allows_the_backend(tmp_path):
    path = tmp_path / "layer.py"
    path.write_text("from .. import backend\nfrom ..backend import numpy as np\n"
                    "a = backend.numpy.zeros(2)\nb = np.ones(2)\n")
    assert not list(_borrowed_array_modules(path))


def test_only_backend_imports_cupy():
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                 if p.name != "backend.py" and "cupy" in set(_imported_modules(p))]
    assert not offenders, f"only tinyalexnet/backend.py may import cupy: {offenders}"
