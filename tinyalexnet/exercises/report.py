"""How an exercise is checked and reported: one ``Exercise`` per checker call.

A checker builds small float64 inputs, calls the learner's function inside
``ex.attempt()``, and records one row per comparison::

    ex = Exercise("2.2", "linear_backward", hint="dW is dout^T @ x ...")
    with ex.attempt():
        dx, dW, db = linear_backward(dout, x, W)
        ex.compare("dx vs numerical gradient", dx, numeric_dx, bound=1e-6)
    return ex.finish()

``ex.require(label, condition)`` records a yes/no row instead (a property the
result must have: a contiguous array, the caller's input left unchanged).
``finish`` prints the report (each relative error, ok or FAIL, a hint when
something failed) and returns an :class:`ExerciseResult`, which is truthy when
the exercise passed.

Hints.  A failed row adds the hint given to its ``compare``; the exercise's
general hint comes last.  A checker that can tell *which* mistake was made
calls ``ex.diagnose(hint)`` instead: that hint leads and replaces the general
one, so that a learner is not sent after a bug they do not have.  Hints that
lead rather than tell can be given in steps: ``earlier_failures(number)``
counts the failed checks of an exercise since it last passed, and the checker
shows more on each new failure.  A function that still raises ``NotImplementedError`` is
reported as "not attempted yet" and the notebook carries on, so a learner can
run a lesson top to bottom before doing its exercises.

Strict mode (``set_strict(True)``, or the environment variable
``TINYALEXNET_STRICT_EXERCISES=1``) turns every failure, and every exercise not
attempted, into an :class:`ExerciseFailed` exception.  The lesson tests run the
notebooks with the reference solutions in strict mode.
"""
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..backend import as_numpy, is_array
from ..gradcheck import rel_error

_strict = os.environ.get("TINYALEXNET_STRICT_EXERCISES", "") not in ("", "0")
_results = []          # every result of this Python session, in order


class ExerciseFailed(AssertionError):
    """Raised in strict mode when an exercise fails or was not attempted."""


def set_strict(flag=True):
    """Raise :class:`ExerciseFailed` on a failed exercise instead of only reporting it."""
    global _strict
    _strict = bool(flag)


def strict():
    """Whether failures raise (strict mode) instead of being reported."""
    return _strict


def results():
    """All exercise results of this session, oldest first."""
    return list(_results)


def earlier_failures(number):
    """How many checks of exercise ``number`` failed in this session since it last passed."""
    count = 0
    for r in _results:
        if r.number == number and r.attempted:
            count = 0 if r.passed else count + 1
    return count


def results_json():
    """The session's results as one JSON line: ``[{"exercise": "2.2", "passed": true}, ...]``."""
    return json.dumps([{"exercise": r.number, "name": r.name, "passed": r.passed,
                        "attempted": r.attempted} for r in _results])


@dataclass
class Row:
    label: str
    error: float          # relative error, or None when the comparison could not be made
    bound: float
    note: str = ""
    holds: bool = None    # a yes/no property (``Exercise.require``) instead of a comparison

    @property
    def ok(self):
        if self.holds is not None:
            return self.holds
        return self.error is not None and self.error <= self.bound


@dataclass
class ExerciseResult:
    number: str
    name: str
    rows: list = field(default_factory=list)
    attempted: bool = True
    problem: str = ""      # an exception the learner's code raised, or a wrong shape
    hints: list = field(default_factory=list)

    @property
    def passed(self):
        return self.attempted and not self.problem and bool(self.rows) and \
            all(r.ok for r in self.rows)

    def __bool__(self):
        return self.passed

    def report(self):
        head = f"Exercise {self.number}: {self.name}"
        if not self.attempted:
            return (f"{head}\n  not attempted yet: replace the `raise NotImplementedError` "
                    f"in `{self.name}` with your code, run that cell, then this one.")
        lines = [head]
        width = max([len(r.label) for r in self.rows] + [10])
        for r in self.rows:
            if r.holds is not None:
                lines.append(f"  {r.label:<{width}}  {'yes' if r.holds else 'no':<29}  "
                             f"{'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
                continue
            err = "   n/a   " if r.error is None else f"{r.error:.1e}"
            bound = "exact" if r.bound == 0 else f"bound {r.bound:.0e}"
            lines.append(f"  {r.label:<{width}}  rel. error {err}  ({bound})  "
                         f"{'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
        if self.problem:
            lines.append(f"  problem: {self.problem}")
        if self.passed:
            lines.append("  PASS")
        else:
            lines.append("  FAIL")
            for h in self.hints:
                lines.append(f"  hint: {h}")
        return "\n".join(lines)

    __str__ = report

    def __repr__(self):
        return f"<exercise {self.number} {self.name}: {'PASS' if self.passed else 'FAIL'}>"

    def _ipython_display_(self):
        # The checker has printed the report already; echoing it as the cell's
        # value would show it twice.
        pass


class Exercise:
    """Collects the comparisons of one checker call (see the module docstring)."""

    def __init__(self, number, name, hint=""):
        self.result = ExerciseResult(number, name)
        self.hint = hint
        self.diagnoses = []     # hints for the mistake the checker recognised, first

    @contextmanager
    def attempt(self):
        """Run the learner's code: NotImplementedError means "not attempted yet"."""
        try:
            yield
        except NotImplementedError:
            self.result.attempted = False
        except _Stop:
            pass
        except Exception as err:  # the learner's code crashed: report it, do not raise
            self.result.problem = f"your code raised {type(err).__name__}: {err}"

    def compare(self, label, got, want, bound=1e-8, hint=""):
        """One row: rel_error(got, want) <= bound.  A wrong type or shape stops the checker."""
        if not is_array(got):
            what = "a number" if want.shape == () else f"an array of shape {tuple(want.shape)}"
            self.result.problem = f"{label}: expected {what}, got {type(got).__name__}"

            self._fail_hint(hint)
            raise _Stop
        if tuple(got.shape) != tuple(want.shape):
            self.result.problem = (f"{label}: expected shape {tuple(want.shape)}, "
                                   f"got {tuple(got.shape)}")
            self._fail_hint(hint)
            raise _Stop
        error = rel_error(as_numpy(got).astype("float64"), as_numpy(want).astype("float64"))
        if error != error:  # NaN: the learner's values are not finite
            error = float("inf")
        row = Row(label, error, bound)
        if want.shape == () and not row.ok:        # a single number: say what came
            row.note = f"got {float(as_numpy(got)):g}, expected {float(as_numpy(want)):g}"
        self.result.rows.append(row)
        if not row.ok:
            self._fail_hint(hint)
        return row.ok

    def require(self, label, holds, hint="", note=""):
        """One yes/no row: a property the result must have (contiguous, input unchanged)."""
        row = Row(label, None, 0.0, note=note, holds=bool(holds))
        self.result.rows.append(row)
        if not row.ok:
            self._fail_hint(hint)
        return row.ok

    def _fail_hint(self, hint):
        if hint and hint not in self.result.hints:
            self.result.hints.append(hint)

    def diagnose(self, hint):
        """The checker knows which mistake this is: ``hint`` leads and the general hint goes."""
        if hint in self.result.hints:
            self.result.hints.remove(hint)
        self.result.hints.insert(len(self.diagnoses), hint)
        self.diagnoses.append(hint)

    def finish(self):
        """Print the report, record the result, and raise in strict mode if it failed."""
        if self.result.attempted and not self.result.rows and not self.result.problem:
            self.result.problem = "nothing was compared"
        if not self.result.passed and self.hint and self.hint not in self.result.hints \
                and self.result.attempted and not self.diagnoses:
            self.result.hints.append(self.hint)
        print(self.result.report())
        _results.append(self.result)
        if _strict and not self.result.passed:
            raise ExerciseFailed(f"exercise {self.result.number} ({self.result.name}) "
                                 f"{'failed' if self.result.attempted else 'was not attempted'}")
        return self.result


class _Stop(Exception):
    """Internal: a comparison could not be made; the report says why."""
