"""Softmax cross-entropy in three launches: the rows, their mean, and the gradient.

``functional.softmax_cross_entropy`` is about fifteen array operations (max,
subtract, exp, sum, log, subtract, gather, mean, exp, scatter, scale) and the
layer's backward two more (copy, scale).  Here:

* ``ROWS``, one thread per row n of the logits z (N, K): the row's maximum m,
  log s with s = sum_k exp(z[k] - m), and the row's loss log s - (z[y] - m),
  which is -log p[y] computed without overflow (exp of numbers <= 0);
* ``MEAN``, one thread: the batch's loss, the rows' mean, summed in order;
* ``BACKWARD``, one thread per logit: from the saved (m, log s) of its row::

      dz[n, k] = (exp((z[n, k] - m) - log s) - [k == y[n]]) / N * dout

  recomputed from the logits instead of kept from forward, so forward writes
  no (N, K) array and backward no copy.

A thread per row is right for the few hundred rows of a batch: the serial loop
over K classes (10 or 1000) costs less than one more launch would.  A label
outside [0, K) (which the layer refuses before) gives a NaN loss, never a read
outside the row.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous, device_or_value

ROWS = Kernel("tinyalexnet_cross_entropy_rows", r"""
extern "C" __global__ void tinyalexnet_cross_entropy_rows(
    const real* __restrict__ z, const long long* __restrict__ labels,
    real* __restrict__ row_loss, real* __restrict__ stats, int K, long long N)
{
    long long n = thread_index();
    if (n >= N) return;
    const real* row = z + n * K;
    real m = row[0];
    for (int k = 1; k < K; ++k) {
        if (row[k] > m || row[k] != row[k]) m = row[k];      // max(): NaN propagates
    }
    real s = 0;
    for (int k = 0; k < K; ++k) s += exp(row[k] - m);
    real log_s = log(s);
    long long y = labels[n];
    row_loss[n] = (y >= 0 && y < K) ? log_s - (row[y] - m) : (real)nan("");
    stats[2 * n] = m;
    stats[2 * n + 1] = log_s;
}
""")

MEAN = Kernel("tinyalexnet_mean", r"""
extern "C" __global__ void tinyalexnet_mean(
    const real* __restrict__ values, real* __restrict__ mean, long long N)
{
    if (thread_index() != 0) return;
    real sum = 0;
    for (long long n = 0; n < N; ++n) sum += values[n];
    mean[0] = sum / (real)N;
}
""")

BACKWARD = Kernel("tinyalexnet_cross_entropy_backward", r"""
extern "C" __global__ void tinyalexnet_cross_entropy_backward(
    const real* __restrict__ z, const long long* __restrict__ labels,
    const real* __restrict__ stats, real* __restrict__ dz, const real* __restrict__ dout_device,
    real dout_value, real inv_N, int K, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    long long row = i / K;
    int k = (int)(i % K);
    real d = exp((z[i] - stats[2 * row]) - stats[2 * row + 1]);     // p[row, k]
    if (labels[row] == k) d -= 1;
    d *= inv_N;
    d *= dout_device ? *dout_device : dout_value;
    dz[i] = d;
}
""")


def forward(logits, labels):
    """logits (N, K), labels (N,) int64 -> (loss (0-d), stats (N, 2): row max and log-sum-exp)."""
    xp = get_array_module(logits)
    logits, labels = contiguous(logits, xp.asarray(labels, dtype=xp.int64))
    N, K = logits.shape
    row_loss = xp.empty((N,), dtype=logits.dtype)
    stats = xp.empty((N, 2), dtype=logits.dtype)
    loss = xp.empty((), dtype=logits.dtype)
    ROWS.launch(xp, logits.dtype, N, (logits, labels, row_loss, stats, xp.int32(K), xp.int64(N)))
    MEAN.launch(xp, logits.dtype, 1, (row_loss, loss, xp.int64(N)))
    return loss, stats


def backward(logits, labels, stats, dout=1.0):
    """dL/dlogits (N, K) times ``dout`` (a number, or a 0-d device array of the logits' dtype)."""
    xp = get_array_module(logits)
    logits, labels, stats = contiguous(logits, xp.asarray(labels, dtype=xp.int64), stats)
    N, K = logits.shape
    real = logits.dtype.type
    dout_device, dout_value = device_or_value(xp, dout, str(logits.dtype))
    dz = xp.empty((N, K), dtype=logits.dtype)
    BACKWARD.launch(xp, logits.dtype, dz.size, (
        logits, labels, stats, dz, dout_device, dout_value, real(1 / N), xp.int32(K),
        xp.int64(dz.size)))
    return dz
