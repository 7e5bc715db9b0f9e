"""The paper's SGD update as one kernel: each thread updates one weight and its velocity.

The rule of section 5 of the paper, as ``optim/sgd.py`` writes it::

    v <- momentum v - wd lr w - lr dL/dw
    w <- w + v

four array operations per parameter (five with the weight decay's product),
here one pass that reads w, g, v once and writes w and v once.  The arrays may
be one parameter or the model's flat buffers (one launch for every weight).
The learning rate may be read from device memory (a 1-element float64 array),
so that a replayed CUDA graph changes it without the host; wd lr is formed in
double, as the array code forms it in Python, then rounded to the weights' type.
The call, its arguments and checks: ``optim/fused.py``'s ``sgd_update``.
"""
from ..backend import get_array_module
from .build import Kernel, device_or_value

UPDATE = Kernel("tinyalexnet_sgd", r"""
extern "C" __global__ void tinyalexnet_sgd(
    real* __restrict__ p, const real* __restrict__ g, real* __restrict__ velocity,
    const double* __restrict__ lr_device, double lr_value,
    real momentum, double weight_decay, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    double lr = lr_device ? *lr_device : lr_value;
    real vi = momentum * velocity[i];
    if (weight_decay != 0) vi = vi - (real)(weight_decay * lr) * p[i];
    vi = vi - (real)lr * g[i];
    velocity[i] = vi;
    p[i] = p[i] + vi;
}
""")


def update(p, g, velocity, lr, momentum, weight_decay):
    """Launch UPDATE on contiguous arrays of one size and dtype (checked by the caller)."""
    xp = get_array_module(p)
    lr_device, lr_value = device_or_value(xp, lr, "float64")
    UPDATE.launch(xp, p.dtype, p.size, (
        p, g, velocity, lr_device, lr_value, p.dtype.type(momentum),
        xp.float64(weight_decay), xp.int64(p.size)))
