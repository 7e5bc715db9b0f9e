"""The optimizers' updates as one GPU kernel each: the calls, in one place.

Adam's update written with array operations (adam.py) is 14 operations per
parameter (16 with weight decay), SGD's 4 (6), each a kernel launch on a GPU,
most with a temporary the size of the parameter: ~250 launches per step for
Adam over AlexNet's 16 parameters, where a small model's step is bound by
launches, not arithmetic.
The functions below run the same update as one CUDA kernel (its source and the
update's formula: ``kernels/adam.py``, ``kernels/sgd.py``).

The arrays: ``p`` (the weights), ``g`` (their gradient) and the optimizer's state
(Adam's ``m`` and ``v``, SGD's ``velocity``), all 1-element-per-weight arrays of
one size and one float dtype (float32 or float64), C-contiguous (``p`` and the
state are updated in place).  Either one parameter (one launch each) or a
whole model's flat buffers (one launch for every weight), any shape.

What changes between steps may live in device memory, so that a replayed CUDA
graph changes it without the host:

* ``lr``: a Python number, or a 1-element float64 device array, read inside the kernel;
* ``step`` (Adam's t, counted from 1): a Python int, or a 1-element int64 device array.

Each returns True when the kernel ran, False where no kernel runs (NumPy, or a
dtype the kernels are not built for): the caller then runs its array code.

    adam_update(p, g, m, v, *, lr, step, beta1, beta2, eps, weight_decay) -> bool
    sgd_update(p, g, velocity, *, lr, momentum, weight_decay) -> bool

The array code stays the reference: ``python -m tinyalexnet check --backend
cupy`` compares the two on the GPU, and times both.  The optimizers use the
kernels with ``fused=True`` (off by default until a GPU run has checked them).
"""
from .. import kernels
from ..errors import ShapeError


def _check(what, **arrays):
    """One size, one dtype (p's), contiguous: else a one-line ShapeError naming the array."""
    p = arrays["p"]
    for name, a in arrays.items():
        if a.size != p.size or a.dtype != p.dtype:
            raise ShapeError(f"{what}: {name} has {a.size} elements of {a.dtype}, expected "
                             f"{p.size} of {p.dtype} like p")
        if not a.flags.c_contiguous:
            raise ShapeError(f"{what}: {name} must be C-contiguous (it is updated in place)")


def adam_update(p, g, m, v, *, lr, step, beta1, beta2, eps, weight_decay):
    """Adam's update of ``p``, ``m`` and ``v`` in place, in one launch (see the module's doc)."""
    if not kernels.runs_on(p):
        return False
    _check("adam_update", p=p, g=g, m=m, v=v)
    kernels.adam.update(p, g, m, v, lr, step, beta1, beta2, eps, weight_decay)
    return True


def sgd_update(p, g, velocity, *, lr, momentum, weight_decay):
    """The paper's SGD update of ``p`` and ``velocity`` in place, in one launch."""
    if not kernels.runs_on(p):
        return False
    _check("sgd_update", p=p, g=g, velocity=velocity)
    kernels.sgd.update(p, g, velocity, lr, momentum, weight_decay)
    return True
