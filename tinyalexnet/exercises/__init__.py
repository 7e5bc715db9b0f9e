"""Exercises for the lessons: checkers for the learner's code, and reference solutions.

In a lesson, the learner writes a function in a marked exercise cell and runs
one checker on it::

    from tinyalexnet.exercises import check_linear_backward
    check_linear_backward(linear_backward)

The checker gradient-checks the learner's backward pass against central
differences (float64) and compares every result with the package's own layer,
then prints the relative errors, PASS or FAIL, and a hint on failure.

* ``checkers.py``  -- one ``check_*`` function per exercise
* ``report.py``    -- how a check is recorded and printed; strict mode for CI
* ``solutions.py`` -- the reference solutions (spoilers)
* ``notebooks.py`` -- finding exercise cells in a notebook and filling in the solutions
* ``claims.py``    -- ``expect``: a statement of a lesson's text, checked against its output
"""
from .checkers import (check_adam_step, check_col2im, check_conv_backward, check_conv_forward,
                       check_conv_num_parameters, check_conv_output_size, check_dropout_backward,
                       check_dropout_forward, check_hflip, check_im2col, check_linear_backward,
                       check_linear_forward, check_lrn_backward, check_lrn_forward,
                       check_maxpool_backward, check_maxpool_forward, check_normalize_channels,
                       check_relu_backward, check_relu_forward, check_sgd_step,
                       check_softmax_cross_entropy, check_tanh_backward, check_to_nchw,
                       check_topk_accuracy)
from .checkers import check_flatten  # lesson 10
from .checkers import check_saliency  # lesson 11
from .checkers import check_dead_fraction, check_lr_range_test, check_update_ratio  # lesson 12
from .checkers import check_f23_matrices, check_winograd_tile  # lesson 13
from .checkers import check_gather_backward  # lesson 14
from .claims import ClaimFailed, expect
from .report import ExerciseFailed, ExerciseResult, results, results_json, set_strict

__all__ = [name for name in dir() if name.startswith("check_")] + [
    "ClaimFailed", "ExerciseFailed", "ExerciseResult", "expect", "results", "results_json",
    "set_strict"]
