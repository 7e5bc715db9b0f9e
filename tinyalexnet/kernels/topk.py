"""The top-k counts' one pass over the scores: how many are below the true class's.

``metrics.below_true`` finds, for each row n of the scores (N, K), how many
scores lie below the true class's own (rank = K - that, so the true class is in
the top k when it is >= K - k).  The array code gathers the true scores (an
``arange``, an addition, a gather), compares every score with its row's (a
kernel) and sums the rows: five launches.  Here one thread per row reads the
true score and counts, in one launch::

    below[n] = #{k : scores[n, k] < scores[n, labels[n]]}

Comparisons are exact, so the counts are the array code's: a NaN is below
nothing and nothing is below a NaN, as with ``<``.  A label outside [0, K) counts
nothing below (as a NaN true score would), never reading outside the row.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

BELOW_TRUE = Kernel("tinyalexnet_below_true", r"""
extern "C" __global__ void tinyalexnet_below_true(
    const real* __restrict__ scores, const long long* __restrict__ labels,
    long long* __restrict__ below, int K, long long N)
{
    long long n = thread_index();
    if (n >= N) return;
    const real* row = scores + n * K;
    long long y = labels[n];
    long long count = 0;
    if (y >= 0 && y < K) {
        real t = row[y];
        for (int k = 0; k < K; ++k) {
            if (row[k] < t) count += 1;                  // false for NaN either side, as <
        }
    }
    below[n] = count;
}
""")


def below_true(scores, labels):
    """scores (N, K), labels (N,) integers -> (N,) int64, one launch."""
    xp = get_array_module(scores)
    scores, labels = contiguous(scores, xp.asarray(labels, dtype=xp.int64))
    N, K = scores.shape
    below = xp.empty((N,), dtype=xp.int64)
    BELOW_TRUE.launch(xp, scores.dtype, N, (scores, labels, below, xp.int32(K), xp.int64(N)))
    return below
