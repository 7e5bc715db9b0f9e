"""Every lesson notebook runs top to bottom, with the reference solutions, and every checker passes.

Each notebook in lessons/ is executed with nbclient (kernel python3, working
directory lessons/, the kernel's Python is this one) after its exercise cells
have been filled with the reference solutions (tinyalexnet.exercises.notebooks).
Exercises run in strict mode, so a failing checker raises inside the notebook;
a last, appended cell reports every checker's result, and each exercise cell of
the notebook must have been checked and passed.  Notebooks are stored without
outputs.  No network is used: the lessons read only the embedded data.

Execution times are printed (``pytest -s``), for the budget in the README.  The
kernel runs with one BLAS thread (see below), which makes those times steady.
"""
import json
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from tinyalexnet.exercises.notebooks import (exercise_cells, fill_solutions,  # noqa: E402
                                             has_outputs)

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 600   # seconds for one cell; whole-notebook times are printed, not asserted
RESULTS_MARK = "EXERCISE-RESULTS "


def test_lessons_exist():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers[:12] == list(range(1, 13)), f"lessons 01..12 expected, found {numbers}"
    assert numbers == list(range(1, len(numbers) + 1)), f"a gap in the numbering: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert not has_outputs(nb), (f"{path.name} holds outputs: run "
                                 f"'python -m tinyalexnet.exercises strip lessons/{path.name}'")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_exercise_cells_are_stubs(path):
    """A learner meets empty exercises: each raises NotImplementedError until written."""
    nb = nbformat.read(path, as_version=4)
    for index, number, names in exercise_cells(nb):
        source = nb.cells[index].source
        assert "raise NotImplementedError" in source, \
            f"{path.name}: exercise {number} is not a stub"
        for name in names:
            assert f"def {name}(" in source, f"{path.name}: exercise {number} lacks def {name}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_with_solutions(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    expected = {number for _, number, _ in exercise_cells(nb)}
    solved = fill_solutions(nb)
    solved.cells.append(nbformat.v4.new_code_cell(
        "import tinyalexnet.exercises as _ex\n"
        f"print({RESULTS_MARK!r} + _ex.results_json())"))
    monkeypatch.setenv("TINYALEXNET_STRICT_EXERCISES", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # One BLAS thread per kernel: on a machine whose cores are busy with other work, a
    # multi-threaded BLAS can wait for its threads and run a product 100 times slower.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    client = nbclient.NotebookClient(solved, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(LESSONS_DIR)}})
    start = time.perf_counter()
    client.execute()   # raises CellExecutionError, naming the cell, on any error
    print(f"\n{path.name}: executed in {time.perf_counter() - start:.1f} s")

    last = solved.cells[-1].outputs
    text = "".join(o.get("text", "") for o in last if o.get("output_type") == "stream")
    assert RESULTS_MARK in text, f"{path.name}: the results cell printed nothing"
    results = json.loads(text.split(RESULTS_MARK, 1)[1])
    failed = [r for r in results if not r["passed"]]
    assert not failed, f"{path.name}: exercises failed: {failed}"
    checked = {r["exercise"] for r in results}
    assert expected <= checked, \
        f"{path.name}: exercises never checked: {sorted(expected - checked)}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_with_empty_exercises(path, monkeypatch):
    """As a learner first opens it: every cell that touches an exercise runs without an error,
    and each checker reports "not attempted" instead of raising.

    The notebook runs up to the last cell that names an exercise function; what follows
    uses only the package, and runs in the test above.
    """
    nb = nbformat.read(path, as_version=4)
    exercises = exercise_cells(nb)
    if not exercises:
        pytest.skip(f"{path.name} has no exercises")
    names = [n for _, _, ns in exercises for n in ns]
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    last = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and word.search(c.source))
    nb.cells = nb.cells[:last + 1]
    nb.cells.append(nbformat.v4.new_code_cell(
        "import tinyalexnet.exercises as _ex\n"
        f"print({RESULTS_MARK!r} + _ex.results_json())"))
    monkeypatch.delenv("TINYALEXNET_STRICT_EXERCISES", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(LESSONS_DIR)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs
                   if o.get("output_type") == "stream")
    results = json.loads(text.split(RESULTS_MARK, 1)[1])
    assert {r["exercise"] for r in results} == {number for _, number, _ in exercises}
    assert not any(r["attempted"] or r["passed"] for r in results), results
