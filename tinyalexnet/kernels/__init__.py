"""The CUDA kernels: where one GPU launch replaces a chain of array operations.

On a GPU a small network's step is bound by how many operations Python launches
one after another, not by arithmetic.  Each kernel here does in one launch what
the array code does in many, and computes the same numbers (the array code stays
the reference: ``layers/functional.py`` is the maths, ``layers/fast.py`` calls
these kernels where the backend compiles kernels, CuPy, and runs its array
versions everywhere else; NumPy never sees a kernel).  One file per concept:

    build.py          Kernel (a name and a CUDA body in ``real``), its exact source per
                      dtype, compilation (cupy.RawKernel) and launch; runs_on(arrays)
    adam.py, sgd.py   the optimizers' updates (called through optim/fused.py)
    relu.py           ReLU forward (value and mask in one pass) and backward
    dropout.py        the counter-based hash, mask and scale in one pass; backward
    lrn.py            local response normalisation, forward and backward
    maxpool.py        max pooling over output windows, backward as a gather
    crop.py           the input pipeline's crop (or centre view) and normalisation, one gather
    im2col.py         im2col (convolution's columns) as a gather, zero border included
    col2im.py         col2im (convolution's dx) as a gather over input pixels
    cross_entropy.py  softmax cross-entropy: per-row loss, mean, gradient
    topk.py           the top-k counts' pass: how many scores lie below the true class's

Every kernel is compiled with NVRTC and executed on the CPU (g++, thread by
thread) by the test suite, in float32 and float64, against the array code:
``pytest -k nvrtc`` and ``pytest -k cpu_exec``.
"""
from . import (adam, col2im, crop, cross_entropy, dropout, im2col, lrn, maxpool, relu, sgd,
               topk)
from .build import Kernel, runs_on

ALL = (adam.UPDATE, sgd.UPDATE, relu.FORWARD, relu.BACKWARD, dropout.FORWARD, dropout.BACKWARD,
       lrn.FORWARD, lrn.BACKWARD, maxpool.FORWARD, maxpool.BACKWARD, im2col.BATCH_LAST,
       col2im.BATCH_LAST, cross_entropy.ROWS, cross_entropy.MEAN, cross_entropy.BACKWARD,
       topk.BELOW_TRUE, crop.CROP_STANDARDIZE)

__all__ = ["ALL", "Kernel", "runs_on", "adam", "col2im", "crop", "cross_entropy", "dropout",
           "im2col", "lrn", "maxpool", "relu", "sgd", "topk"]
