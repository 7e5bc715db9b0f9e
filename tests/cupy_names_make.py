"""Write cupy_names.json: the names CuPy has, for the strict stand-in (strict_cupy.py).

The stand-in lets a program use a name only if the real CuPy has it, so code that
works on the stand-in does not stop on a GPU with "module 'cupy' has no attribute".
CuPy imports without a GPU, so the lists are taken from the installed package once
and kept as data; run this again after a CuPy upgrade:

    python tests/cupy_names_make.py            # with a Python where `import cupy` works

(it was run with CuPy 14.2.0 and NumPy 2.4 in a separate virtual environment).
Each namespace maps a public name to its kind: "ufunc", "function", "type",
"module" or "value"; "keywords" lists the keyword arguments of CuPy's functions that
have a signature (a NumPy-only keyword, such as ``where=`` of a ufunc, fails on CuPy).
"""
import inspect
import json
import os
import sys

import cupy
import cupy.cuda.memory
import cupy.cuda.runtime
import cupy.lib.stride_tricks
import cupy.linalg
import cupy.random
import cupyx

HERE = os.path.dirname(os.path.abspath(__file__))


def kind(obj):
    if isinstance(obj, cupy.ufunc):
        return "ufunc"
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "type"
    if callable(obj):
        return "function"
    return "value"


def names(obj, private_ok=()):
    return {n: kind(getattr(obj, n)) for n in sorted(dir(obj))
            if (not n.startswith("_") or n in private_ok) and n != "annotations"}


def keywords(module):
    """{function: [names it accepts as keywords] + ["**"] if it takes any}, where CuPy's
    function has an inspectable signature (most Python-level ones do; ufuncs do not)."""
    out = {}
    for n in sorted(dir(module)):
        f = getattr(module, n)
        if n.startswith("_") or not callable(f) or inspect.isclass(f) or isinstance(f, cupy.ufunc):
            continue
        try:
            params = inspect.signature(f).parameters.values()
        except (TypeError, ValueError):
            continue
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        out[n] = names + (["**"] if any(p.kind == p.VAR_KEYWORD for p in params) else [])
    return out


def members(cls):
    """Attributes of a class, dunder methods included (they decide what Python syntax works)."""
    return sorted(n for n in dir(cls) if not (n.startswith("_") and not n.startswith("__")))


def main(path=os.path.join(HERE, "cupy_names.json")):
    data = {
        "about": ("Public names of CuPy, taken by tests/cupy_names_make.py from the installed "
                  "package; the strict stand-in (tests/strict_cupy.py) allows only these."),
        "cupy_version": cupy.__version__,
        "numpy_version": __import__("numpy").__version__,
        "python": sys.version.split()[0],
        "modules": {
            "cupy": names(cupy, private_ok=("__version__",)),
            "cupy.linalg": names(cupy.linalg),
            "cupy.random": names(cupy.random),
            "cupy.lib.stride_tricks": names(cupy.lib.stride_tricks),
            "cupy.cuda": names(cupy.cuda),
            "cupy.cuda.runtime": names(cupy.cuda.runtime),
            "cupy.cuda.memory": names(cupy.cuda.memory),
            "cupyx": names(cupyx),
        },
        "keywords": {"cupy": keywords(cupy), "cupy.linalg": keywords(cupy.linalg)},
        "classes": {
            "cupy.ndarray": members(cupy.ndarray),
            "cupy.cuda.Device": members(cupy.cuda.Device),
            "cupy.cuda.Event": members(cupy.cuda.Event),
            "cupy.cuda.Stream": members(cupy.cuda.Stream),
            "cupy.cuda.MemoryPool": members(cupy.cuda.MemoryPool),
            "cupy.cuda.MemoryHook": members(cupy.cuda.MemoryHook),
        },
    }
    for mod in ("cupy.lib.stride_tricks",):   # modules re-exported inside these namespaces
        data["modules"][mod].pop("np", None)
        data["modules"][mod].pop("_cupy", None)
    with open(path, "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"wrote {path}: " + ", ".join(f"{m} {len(v)}" for m, v in data["modules"].items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
