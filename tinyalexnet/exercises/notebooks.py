"""Exercise cells in the lesson notebooks, and filling them with the reference solutions.

An exercise cell is a code cell tagged ``exercise`` whose metadata names the
functions it must define::

    "metadata": {"tags": ["exercise"],
                 "tinyalexnet": {"exercise": "2.2", "solution": ["linear_backward"]}}

The learner's notebook holds a stub there (``raise NotImplementedError``).
:func:`fill_solutions` returns a copy of the notebook in which each exercise
cell holds the source of those functions from ``solutions.py`` instead: the
lesson tests execute that copy and require every checker to pass.  The stored
notebooks never change.

From the command line (``python -m tinyalexnet.exercises --help``)::

    python -m tinyalexnet.exercises solve lessons/02_linear_softmax.ipynb solved.ipynb
    python -m tinyalexnet.exercises strip lessons/*.ipynb     # remove outputs before committing
"""
import copy
import inspect

from . import solutions

TAG = "exercise"


def exercise_cells(nb):
    """``[(index, number, [function names])]`` of the notebook's exercise cells, in order."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and TAG in cell.get("metadata", {}).get("tags", []):
            meta = cell.metadata.get("tinyalexnet", {})
            found.append((index, str(meta.get("exercise", "?")), list(meta.get("solution", []))))
    return found


def solution_source(names):
    """The source of the named reference solutions, ready to stand in an exercise cell."""
    missing = [n for n in names if not inspect.isfunction(getattr(solutions, n, None))]
    if missing:
        raise KeyError(f"no reference solution named {', '.join(missing)} in "
                       "tinyalexnet/exercises/solutions.py")
    functions = [getattr(solutions, n) for n in names]
    # Where each function lives: solutions.py itself, or the layer code it imports.
    files = dict.fromkeys("tinyalexnet/" + f.__module__.split(".", 1)[1].replace(".", "/") + ".py"
                          for f in functions)
    parts = [inspect.getsource(f).rstrip() for f in functions]
    return (f"# Reference solution ({', '.join(files)})\n" + "\n\n\n".join(parts))


def fill_solutions(nb):
    """A copy of ``nb`` whose exercise cells hold the reference solutions."""
    nb = copy.deepcopy(nb)
    for index, number, names in exercise_cells(nb):
        if not names:
            raise KeyError(f"exercise cell {index} (exercise {number}) names no solution "
                           "in its metadata")
        nb.cells[index].source = solution_source(names)
    return nb


def has_outputs(nb):
    """True if any code cell holds outputs or an execution count."""
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
               for c in nb.cells)


def strip_outputs(nb):
    """Remove every output and execution count, in place; returns ``nb``."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb
