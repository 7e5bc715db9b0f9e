"""Rules about the layout, checked on the source.

* Only backend.py chooses NumPy or CuPy.  Layers, optimizers, models and the
  kernels' launch code get their array module from their inputs
  (``get_array_module``) or from ``tinyalexnet.backend``; if one of them imported
  numpy itself, it would silently run on the CPU inside a GPU step.  Nor may they
  borrow another module's numpy (``init.np``, ``from ..init import np``): that is
  the same import by a back door.
* Every module has a test file that names it, where CONTRIBUTING.md's "Where
  each module is tested" says.
"""
import ast
import re
from collections import Counter
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


# ---------------------------------------------------------------------------- where each module is tested
# CONTRIBUTING.md says where each module is tested: tests/test_<name>.py where that file
# exists, else the line of its table.  These tests keep that true as files are added.
ROOT = PACKAGE.parent
TABLE_HEADING = "## Where each module is tested"


def _only_imports(path):
    """A package's __init__.py that only imports and names (__all__, __version__): no code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue                                                  # the docstring
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.startswith("__")
                                                for t in node.targets):
            continue
        return False
    return True


def package_modules(package):
    """Every module of ``package`` to be tested, as paths relative to it ("layers/conv.py")."""
    return sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                  if not (p.name == "__init__.py" and _only_imports(p)))


def own_test_file(package, module):
    """tests/test_<name>.py for <name>.py; a package's __init__ and __main__: test_<package>.py."""
    parts = [package.name] + module[:-3].split("/")
    if parts[-1] in ("__init__", "__main__"):
        parts = parts[:-1]
    return f"test_{parts[-1]}.py"


def table_of_tests(contributing):
    """{module: (test file, through or None)} from the table under TABLE_HEADING.

    In the table's fenced block a line starting at the margin names a test file and the
    modules it tests; an indented line goes on with the same file.  A module written
    with its folder ("layers/conv.py") sets the folder of the bare names after it, up
    to the next test file; "name.py (through X)" says the tests reach it through X."""
    section = contributing.split(TABLE_HEADING, 1)[1]
    block = section.split("```", 2)[1].split("\n", 1)[1]
    table, test_file = {}, None
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            test_file, line = line.split(None, 1)
            folder = ""
        for item in line.replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            name, _, through = item.partition(" (through ")
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
            module = name if "/" in name else folder + name
            table[module] = (test_file, through.rstrip(")") or None)
    return table


def _named_in(test_path, package, module, through):
    """Does the test file name ``module``: an import of it, its run name as a string
    ("-m", "tinyalexnet.bench"), its path, a public name no other module defines, or
    ``through``?"""
    text = test_path.read_text()
    tree = ast.parse(text, filename=str(test_path))
    dotted = ".".join([package.name] + module[:-3].split("/"))
    dotted = dotted.removesuffix(".__init__")
    run_name = dotted.removesuffix(".__main__")
    imported, names, strings = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    path_named = re.search(rf"(^|[^\w/]){re.escape(module)}\b", text)
    return bool(dotted in imported or run_name in strings or path_named
                or names & _unique_names(package)[module]
                or (through and re.search(rf"\b{re.escape(through)}\b", text)))


def _public_names(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def _unique_names(package):
    """{module: its public names that no other module of the package defines}."""
    defined = {str(p.relative_to(package)): _public_names(p) for p in package.rglob("*.py")}
    count = Counter(n for names in defined.values() for n in names)
    return {m: {n for n in names if count[n] == 1} for m, names in defined.items()}


def untested(package, tests, contributing):
    """Each way the statement fails: a module with no test file, a line naming a test file
    or module that does not exist, a test file that does not name its module."""
    table = table_of_tests(contributing)
    modules = package_modules(package)
    problems = [f"{package.name}/{m} is listed in CONTRIBUTING.md's table but does not exist"
                for m in table if m not in modules]
    for module in modules:
        own = own_test_file(package, module)
        if (tests / own).exists():
            test_file, through = own, None
        elif module in table:
            test_file, through = table[module]
        else:
            problems.append(f"{package.name}/{module} has no tests/{own} and no line in "
                            f"CONTRIBUTING.md's \"{TABLE_HEADING[3:]}\"")
            continue
        if not (tests / test_file).exists():
            problems.append(f"{package.name}/{module}: tests/{test_file} does not exist")
        elif not _named_in(tests / test_file, package, module, through):
            problems.append(f"tests/{test_file} does not name {package.name}/{module} (an "
                            f"import, a name defined only there, its path, or what it is "
                            f"tested through)")
    return problems


def test_every_module_has_a_test_file_that_names_it():
    problems = untested(PACKAGE, ROOT / "tests", (ROOT / "CONTRIBUTING.md").read_text())
    assert not problems, "\n".join(problems)


def test_the_table_check_sees_each_way_it_can_fail(tmp_path):
    package, tests = tmp_path / "pkg", tmp_path / "tests"
    (package / "sub").mkdir(parents=True)
    tests.mkdir()
    (package / "__init__.py").write_text('"""A package."""\nfrom .a import Alpha\n')
    (package / "a.py").write_text("class Alpha:\n    pass\n")
    (package / "b.py").write_text("def beta():\n    pass\n")
    (package / "sub" / "c.py").write_text("GAMMA = 3\n")
    (tests / "test_a.py").write_text("from pkg.a import Alpha\n")
    (tests / "test_more.py").write_text("from pkg.b import beta\nfrom pkg.sub.c import GAMMA\n")
    table = f"{TABLE_HEADING}\n\n```\ntest_more.py  b.py, sub/c.py\n```\n"
    assert untested(package, tests, table) == []
    assert table_of_tests(table) == {"b.py": ("test_more.py", None),
                                      "sub/c.py": ("test_more.py", None)}
    no_line = untested(package, tests, table.replace(" b.py,", ""))
    assert len(no_line) == 1 and "pkg/b.py has no tests/test_b.py" in no_line[0]
    stale = untested(package, tests, table.replace("sub/c.py", "sub/c.py, sub/gone.py"))
    assert len(stale) == 1 and "pkg/sub/gone.py is listed" in stale[0]
    missing = untested(package, tests, table.replace("test_more.py", "test_other.py"))
    assert len(missing) == 2 and all("tests/test_other.py does not exist" in p for p in missing)
    (tests / "test_more.py").write_text("from pkg.b import beta\n")        # c no longer named
    unnamed = untested(package, tests, table)
    assert len(unnamed) == 1 and "does not name pkg/sub/c.py" in unnamed[0]
    through = table.replace("sub/c.py", "sub/c.py (through beta)")
    assert untested(package, tests, through) == []
    (package / "__init__.py").write_text("def setup():\n    pass\n")      # code: needs a test
    assert "pkg/__init__.py has no tests/test_pkg.py" in untested(package, tests, through)[0]
