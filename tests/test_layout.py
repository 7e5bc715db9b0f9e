"""The backend rule, checked on the source: only backend.py chooses NumPy or CuPy.

Layers, optimizers and models get their array module from their inputs
(``get_array_module``) or from ``tinyalexnet.backend``; if one of them imported
numpy itself, it would silently run on the CPU inside a GPU step.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinyalexnet"
ARRAY_CODE = sorted(p for folder in ("layers", "optim", "models")
                    for p in (PACKAGE / folder).glob("*.py"))


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_there_is_array_code_to_check():
    names = {p.name for p in ARRAY_CODE}
    assert {"conv.py", "pool.py", "lrn.py", "sgd.py", "alexnet.py"} <= names, names


@pytest.mark.parametrize("path", ARRAY_CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_array_code_does_not_import_numpy_or_cupy(path):
    imported = set(_imported_modules(path)) & {"numpy", "cupy"}
    assert not imported, (f"{path.relative_to(PACKAGE.parent)} imports {sorted(imported)}: "
                          "take xp = get_array_module(x) (or tinyalexnet.backend) instead")


def test_only_backend_imports_cupy():
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                 if p.name != "backend.py" and "cupy" in set(_imported_modules(p))]
    assert not offenders, f"only tinyalexnet/backend.py may import cupy: {offenders}"
