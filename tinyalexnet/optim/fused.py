"""Fused GPU kernels for the optimizers: one kernel per parameter instead of a dozen.

Adam's update written with array operations (adam.py) is about twelve calls
per parameter, each a kernel launch on a GPU with a temporary the size of the
parameter: ~190 launches for AlexNet's 16 parameters, where a small model's
step is bound by launches, not arithmetic.  ``adam_kernel(xp)`` is the same
update as one CuPy ``ElementwiseKernel``: each GPU thread reads g, p, m, v
once, keeps everything else in registers, and writes p, m, v once::

    g' = g + wd p
    m  = b1 m + (1 - b1) g'                      (running mean of g)
    v  = b2 v + (1 - b2) g'^2                    (running mean of g^2)
    p  = p - lr (m c1) / (sqrt(v c2) + eps),     c1 = 1 / (1 - b1^t), c2 = 1 / (1 - b2^t)

The array version stays the reference: ``python -m tinyalexnet check --backend
cupy`` compares the two on the GPU, and times both, before anyone relies on the
kernel.  Until a GPU run has done that, it is off: ``Adam(model, fused=True)``.
"""

ADAM_OPERATION = """
    T grad = g + wd * p;
    m = b1 * m + (1 - b1) * grad;
    v = b2 * v + (1 - b2) * grad * grad;
    p = p - lr * (m * c1) / (sqrt(v * c2) + eps);
"""
ADAM_NAME = "tinyalexnet_adam"
_kernels = {}


def adam_kernel(xp):
    """The fused Adam update on ``xp``'s device, built once; None where ``xp`` compiles no
    kernels (NumPy).  Call: ``kernel(g, lr, b1, b2, eps, wd, c1, c2, p, m, v)``, updating
    p, m and v in place."""
    make = getattr(xp, "ElementwiseKernel", None)
    if make is None:
        return None
    if xp not in _kernels:
        _kernels[xp] = make("T g, T lr, T b1, T b2, T eps, T wd, T c1, T c2", "T p, T m, T v",
                            ADAM_OPERATION, ADAM_NAME)
    return _kernels[xp]
