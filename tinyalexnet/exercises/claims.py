"""``expect``: a lesson's statement about its own output, checked where it is made.

A lesson never types a measured number (a loss, a time, a ratio) into its text:
numbers change with the machine, the BLAS, the thread count, a new layer.  The
text says only what holds on every run (the loss falls below 0.5, ReLU gets
there first, the gap is smaller with augmentation), and the cell that produced
the numbers checks it::

    expect(val_loss[-1] < 0.5, f"the validation loss ends below 0.5 ({val_loss[-1]:.3f})")

A claim that holds prints nothing.  One that does not is reported under the
cell: the learner is told that this run does not show what the text says.  In
strict mode (the lesson tests, ``TINYALEXNET_STRICT_EXERCISES=1``, see
``report.py``) it raises :class:`ClaimFailed`, so that CI fails a lesson whose
output no longer supports its text.
"""
from . import report


class ClaimFailed(AssertionError):
    """Raised in strict mode when a lesson's statement does not hold for its output."""


def expect(holds, claim):
    """Check one statement of the lesson's text against this run.  Returns nothing, so that
    a cell ending with it shows no value."""
    if holds:
        return
    message = (f"the text says: {claim} -- but this run does not show it.  Results vary a little "
               "from machine to machine; if you changed a setting above, that is expected.")
    if report.strict():
        raise ClaimFailed(message)
    print(f"NOTE: {message}")
