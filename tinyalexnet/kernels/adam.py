"""Adam's update as one kernel: each thread updates one weight, its m and its v.

The array code (``optim/adam.py``) is 14 operations per parameter (16 with
weight decay), each a launch and most a temporary as large as the parameter;
here every thread reads p, g, m, v once and writes p, m, v once::

    g' = g + wd p
    m  = b1 m + (1 - b1) g'
    v  = b2 v + (1 - b2) g'^2
    p  = p - lr (m c1) / (sqrt(v c2) + eps),      c1 = 1 / (1 - b1^t),  c2 = 1 / (1 - b2^t)

The arrays may be one parameter or the whole model's flat buffers (one launch
for every weight).  The learning rate and the step t may be read from device
memory (a 1-element float64 and int64 array), so that a replayed CUDA graph
changes them without the host.  1 - b1 and 1 - b2 come rounded from double, as
the array code has them (1 - b2 formed in float32 from float32(0.999) would be
off by 1.3e-5).  The bias corrections are computed from t in each thread as
-1 / expm1(t log b): exact to a few ulps even at t = 1 with b2 = 0.999, where
1 - pow(b2, t) would lose three digits to cancellation.
The call, its arguments and checks: ``optim/fused.py``'s ``adam_update``.
"""
import math

from ..backend import get_array_module
from .build import Kernel, device_or_value

UPDATE = Kernel("tinyalexnet_adam", r"""
extern "C" __global__ void tinyalexnet_adam(
    real* __restrict__ p, const real* __restrict__ g, real* __restrict__ m, real* __restrict__ v,
    const double* __restrict__ lr_device, double lr_value,
    const long long* __restrict__ step_device, long long step_value,
    real beta1, real one_minus_beta1, real beta2, real one_minus_beta2, real log_beta1,
    real log_beta2, real eps, real weight_decay, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    real lr = (real)(lr_device ? *lr_device : lr_value);
    real t = (real)(step_device ? *step_device : step_value);
    real c1 = -1 / expm1(t * log_beta1);                 // 1 / (1 - beta1^t)
    real c2 = -1 / expm1(t * log_beta2);                 // 1 / (1 - beta2^t)
    real grad = g[i] + weight_decay * p[i];
    real mi = beta1 * m[i] + one_minus_beta1 * grad;
    real vi = beta2 * v[i] + one_minus_beta2 * (grad * grad);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - lr * (mi * c1) / (sqrt(vi * c2) + eps);
}
""")


def _log(beta):
    return math.log(beta) if beta > 0 else -math.inf     # beta = 0: c = 1 at every step


def update(p, g, m, v, lr, step, beta1, beta2, eps, weight_decay):
    """Launch UPDATE on contiguous arrays of one size and dtype (checked by the caller)."""
    xp = get_array_module(p)
    real = p.dtype.type
    lr_device, lr_value = device_or_value(xp, lr, "float64")
    step_device, step_value = device_or_value(xp, step, "int64")
    UPDATE.launch(xp, p.dtype, p.size, (
        p, g, m, v, lr_device, lr_value, step_device, step_value,
        real(beta1), real(1 - beta1), real(beta2), real(1 - beta2), real(_log(beta1)),
        real(_log(beta2)), real(eps), real(weight_decay), xp.int64(p.size)))
