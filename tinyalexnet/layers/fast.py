"""The fast versions: the same maths as functional.py, rearranged for speed.

Read ``functional.py`` first: it is the maths.  Conv2d, MaxPool2d,
LocalResponseNorm, ReLU, Dropout, Linear and SoftmaxCrossEntropy run the versions
below by default (``layer.fast = True``); ``layer.fast = False``, or
``model.set_fast(False)`` for a whole model, runs the readable functions
instead.  Each function here computes what its readable twin computes, and
``tests/test_fast_paths.py`` checks that on random inputs (exactly where only
the order of copies differs, to float rounding where sums run in another
order).  What each one changes, and why:

1. Convolution with the batch last.  im2col copies windows in runs of OW
   numbers (the inner axis of a strided slice), and for 13x13 or 5x5 maps a run
   of 5 to 13 numbers costs more in loop overhead than in copying.  In a
   (C, H, W, N) copy of x a window row is a run of ``OW * N`` numbers (``N`` for
   stride > 1): the same bytes, moved several times faster.  The columns of
   cols are then ordered (oh, ow, n) instead of (n, oh, ow); the rows, and so
   the weights, multiply exactly as before.  One strided view presents every
   window at once, and one copy of it is cols (on a GPU: one kernel, not kh*kw).
   The weight gradient is one 2-D product per group: BLAS and cuBLAS then read
   ``cols[g]`` transposed in place (a 3-D ``matmul`` would make CuPy copy it);
   so is dcols = W^T dy, which reads W transposed in place.

2. Max pooling with a one-byte arg-max.  The running maximum reads each
   window offset into one contiguous buffer first (the comparison and the
   maximum then read contiguous memory: 1.3-1.6x faster on the CPU), and
   remembers which of the k*k offsets won in a uint8 array (k <= 16) instead of
   recomputing the winners in backward.

3. LRN keeping D and D^-beta.  Forward keeps the denominator D and its power
   for backward, so backward recomputes neither; both passes sum the channel
   window by adding shifted slices in place (no zero-padded copy of the
   activations) and reuse their temporaries in place, since every array here is
   as large as the layer's input.

4. On a GPU, one kernel instead of a chain.  A small network's step on a GPU is
   bound by how many operations Python launches, not by arithmetic: max
   pooling's loop over offsets is some fifty launches, col2im's up to 124,
   im2col's padded copy three, a dropout mask twenty-five.  Where the backend
   compiles kernels (CuPy) and the arrays are float32 or float64
   (``kernels.runs_on``), the functions below run one CUDA kernel per pass
   instead (``tinyalexnet/kernels/``, one file per kernel, each explained
   there); everywhere else, and always on NumPy, they run the array code, which
   stays the reference.  The kernels compute the same
   numbers: exactly the same for ReLU, dropout, max pooling, im2col and col2im
   (the same operations in the same order), to rounding for LRN and the loss.

5. Gradients written where they live.  A layer's gradients are views into the
   model's flat gradient buffer (``module.py``).  Conv2d and Linear write dW and
   db straight into them (``out=`` of the products and of the sum) instead of
   making new arrays and copying them in: the same numbers, two copies fewer per
   layer (on a GPU, two launches).  Conv2d's db sums dout over (n, oh, ow), as
   the readable function does: the same bits as its db (to rounding what the
   sum of dy's rows gave before).

6. Every matrix product through ``graph.matmul``.  It is ``xp.matmul``; during a
   CUDA graph's capture it cuts the capture there, because CuPy 14 refuses
   cuBLAS calls inside one (graph.py says where in CuPy's source).
"""
from .. import graph, kernels, rng
from ..backend import get_array_module
from . import functional
from .im2col import conv_output_size


# ---------------------------------------------------------------------------- 1. convolution
def pad_batch_last(x, padding):
    """(N, C, H, W) -> (C, H + 2p, W + 2p, N): the batch-last copy of x, zero-padded."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    p = padding
    # One fill of the whole buffer, not four of its border: on a GPU each fill is a
    # launch, and writing the interior twice costs less than three more launches.
    out = (xp.zeros if p else xp.empty)((C, H + 2 * p, W + 2 * p, N), dtype=x.dtype)
    out[:, p:p + H, p:p + W] = x.transpose(1, 2, 3, 0)
    return out


def im2col_batch_last(x, kh, kw, stride=1, padding=0):
    """(N, C, H, W) -> cols (C*kh*kw, OH*OW*N), column oh*OW*N + ow*N + n = window (n, oh, ow).

    One strided *view* presents every window at once, without copying::

        windows[c, i, j, oh, ow, n] = x_pad[c, oh*stride + i, ow*stride + j, n]

    (a step along oh moves ``stride`` rows of x_pad, a step along i one row), and
    a single copy of that view is cols.  On a GPU: one kernel, each element of
    cols reading its pixel of x, without the padded copy (``kernels/im2col.py``).
    """
    if kernels.runs_on(x):
        return kernels.im2col.batch_last(x, kh, kw, stride, padding)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    x_pad = pad_batch_last(x, padding)                       # (C, Hp, Wp, N), contiguous
    sc, sh, sw, sn = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(
        x_pad, shape=(C, kh, kw, OH, OW, N),
        strides=(sc, sh, sw, sh * stride, sw * stride, sn))
    return xp.ascontiguousarray(windows).reshape(C * kh * kw, OH * OW * N)


def col2im_batch_last(cols, x_shape, kh, kw, stride=1, padding=0):
    """cols (C*kh*kw, OH*OW*N) -> dx (N, C, H, W): the adjoint of ``im2col_batch_last``.

    The same loop over offsets as ``col2im`` (a view cannot add overlapping
    windows), on the batch-last layout, so each ``+=`` moves long runs.  On a
    GPU: one kernel, each pixel summing its windows (``kernels/col2im.py``).
    """
    if kernels.runs_on(cols):
        return kernels.col2im.batch_last(cols, x_shape, kh, kw, stride, padding)
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    cols = cols.reshape(C, kh, kw, OH, OW, N)
    dx = xp.zeros((C, H + 2 * padding, W + 2 * padding, N), dtype=cols.dtype)
    for i in range(kh):
        i_end = i + stride * OH
        for j in range(kw):
            dx[:, i:i_end:stride, j:j + stride * OW:stride] += cols[:, i, j]
    dx = dx[:, padding:padding + H, padding:padding + W]
    return xp.ascontiguousarray(dx.transpose(3, 0, 1, 2))


def conv_forward(x, W, b, stride=1, padding=0, groups=1, keep_cols=False):
    """``functional.conv_forward`` on the batch-last columns.

    -> (out (N, F, OH, OW), cols (G, C/G*kh*kw, OH*OW*N) if ``keep_cols`` else None).
    cols is kh*kw times the size of x: unless kept, it is freed before out is made.
    """
    xp = get_array_module(x)
    N, _, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(Wd, kw, stride, padding)
    G = groups
    cols = im2col_batch_last(x, kh, kw, stride, padding).reshape(G, -1, OH * OW * N)
    y = graph.matmul(W.reshape(G, F // G, -1), cols)                    # (G, F/G, OH*OW*N)
    if not keep_cols:
        cols = None
    # y is (F, OH, OW, N); one pass moves the batch axis to the front and adds the bias.
    out = xp.empty((N, F, OH, OW), dtype=y.dtype)
    xp.add(y.reshape(F, OH, OW, N).transpose(3, 0, 1, 2), b.reshape(1, F, 1, 1), out=out)
    return out, cols


def conv_backward(dout, W, x_shape, stride=1, padding=0, groups=1, x=None, cols=None,
                  input_grad=True, dW=None, db=None):
    """``functional.conv_backward`` on the batch-last columns.

    Takes the columns ``conv_forward`` kept, or rebuilds them from ``x``.  ``dW`` and
    ``db``, when given (the layer's gradients: views into the model's flat gradient
    buffer, C-contiguous), are written in place, as the products and the sum make them.
    -> (dx (N, C, H, W), or None if not ``input_grad``; dW (F, C/G, kh, kw); db (F,)).
    """
    xp = get_array_module(dout)
    N, F, OH, OW = dout.shape
    _, _, kh, kw = W.shape
    G = groups
    if dW is None:
        dW = xp.empty(W.shape, dtype=dout.dtype)
    elif not dW.flags.c_contiguous:     # its per-group view below would be a copy, written in vain
        raise ValueError(f"conv_backward: dW must be C-contiguous, got strides {dW.strides}")
    if db is None:
        db = xp.empty((F,), dtype=dout.dtype)
    # db as the readable function sums it, over dout's (n, oh, ow), straight into db: one
    # pass (CuPy sums dy's rows in CUB's segmented reduction, which then copies into db).
    dout.sum(axis=(0, 2, 3), out=db)
    dy = xp.ascontiguousarray(dout.transpose(1, 2, 3, 0)).reshape(G, F // G, OH * OW * N)
    if cols is None:
        cols = im2col_batch_last(x, kh, kw, stride, padding).reshape(G, -1, OH * OW * N)
    dW_groups = dW.reshape(G, F // G, cols.shape[1])                      # a view: dW itself
    for g in range(G):
        graph.matmul(dy[g], cols[g].T, out=dW_groups[g])                  # 2-D: cols[g] not copied
    del cols                # a rebuilt cols can go before dcols, as large, is made
    if not input_grad:
        return None, dW, db
    # dcols = w^T @ dy, again one 2-D product per group: cuBLAS reads w[g] transposed in
    # place, where a 3-D matmul over w.transpose(0, 2, 1) would first copy it.
    w = W.reshape(G, F // G, -1)
    dcols = xp.empty((G, w.shape[2], dy.shape[2]), dtype=dy.dtype)     # (G, Cg*kh*kw, OH*OW*N)
    for g in range(G):
        graph.matmul(w[g].T, dy[g], out=dcols[g])
    dx = col2im_batch_last(dcols, x_shape, kh, kw, stride, padding)
    return dx, dW, db


# ---------------------------------------------------------------------------- 2. max pooling
def _windows(kernel_size, stride, OH, OW):
    """(offset number, slice of x) for each of the k*k window offsets, in row-major order."""
    k, s = kernel_size, stride
    for i in range(k):
        for j in range(k):
            yield i * k + j, (Ellipsis, slice(i, i + s * OH, s), slice(j, j + s * OW, s))


def maxpool_forward(x, kernel_size=3, stride=2):
    """``functional.maxpool_forward``, also returning which offset won each window.

    -> (out (N, C, OH, OW), argmax (N, C, OH, OW): the offset number i*k + j of the maximum).
    On a GPU: one kernel, a thread per window (``kernels/maxpool.py``).
    """
    if kernels.runs_on(x) and kernel_size ** 2 <= kernels.maxpool.MAX_WINDOW:
        return kernels.maxpool.forward(x, kernel_size, stride)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = conv_output_size(H, kernel_size, stride, 0)
    OW = conv_output_size(W, kernel_size, stride, 0)
    # Which offset won: one byte per output while the k*k offsets fit (k <= 16).
    index_dtype = xp.uint8 if kernel_size ** 2 <= 256 else xp.int32
    argmax = xp.zeros((N, C, OH, OW), dtype=index_dtype)
    candidate = xp.empty_like(argmax, dtype=x.dtype)
    better = xp.empty_like(argmax, dtype=bool)
    out = None
    for index, window in _windows(kernel_size, stride, OH, OW):
        if out is None:
            out = x[window].copy()
            continue
        # One strided read into a contiguous buffer, so that the comparison and
        # the maximum read contiguous memory.
        candidate[...] = x[window]
        xp.greater(candidate, out, out=better)
        xp.maximum(out, candidate, out=out)
        # argmax = index where better, else unchanged.  Offsets come in increasing
        # order, so index exceeds every earlier winner and a maximum does it.  A tie
        # is not "better": it stays with the first offset, as in functional.py.
        xp.maximum(argmax, better * index_dtype(index), out=argmax)
    return out, argmax


def maxpool_backward(dout, argmax, x_shape, kernel_size=3, stride=2):
    """``functional.maxpool_backward`` from the saved arg-max: dout (N, C, OH, OW) -> dx.

    On a GPU: one kernel, each input pixel gathering the dout of the windows it won."""
    xp = get_array_module(dout)
    if kernels.runs_on(dout) and argmax.dtype == xp.uint8:
        return kernels.maxpool.backward(dout, argmax, x_shape, kernel_size, stride)
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    OH, OW = dout.shape[2:]
    for index, window in _windows(kernel_size, stride, OH, OW):
        dx[window] += dout * (argmax == index)
    return dx


# ---------------------------------------------------------------------------- 3. LRN
def channel_window_sum(a, size):
    """s[:, c] = sum of a[:, j] for |j - c| <= size // 2 (zero outside 0..C-1).

    Start from a itself and add the neighbours d = 1 .. size//2 channels away on
    each side; a channel near the edge simply has fewer neighbours to add, so no
    zero-padded copy of a is needed.
    """
    s = a.copy()
    for d in range(1, size // 2 + 1):
        s[:, d:] += a[:, :-d]     # the neighbour d channels below
        s[:, :-d] += a[:, d:]     # the neighbour d channels above
    return s


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """``functional.lrn_forward``, also returning D and D^-beta for backward.

    -> (out, D, scale), all (N, C, H, W): D the denominator of functional.py's equation,
    scale = D^-beta.  On a GPU: one kernel (``kernels/lrn.py``).
    """
    if kernels.runs_on(x):
        return kernels.lrn.forward(x, size, alpha, beta, k)
    D = channel_window_sum(x * x, size)
    D *= alpha                        # in place: these arrays are as large as x
    D += k
    scale = D ** -beta
    return x * scale, D, scale


def lrn_backward(dout, x, D, scale, size=5, alpha=1e-4, beta=0.75):
    """``functional.lrn_backward`` (its equation is there) from the saved D and
    scale = D^-beta, in place: D^-beta is scale, and out / D is x * scale / D.
    On a GPU: one kernel, no temporary (``kernels/lrn.py``).
    """
    if kernels.runs_on(dout, x, D, scale):
        return kernels.lrn.backward(dout, x, D, scale, size, alpha, beta)
    t = dout * x                      # dout * out / D, with out = x * scale
    t *= scale
    t /= D
    inner = channel_window_sum(t, size)
    inner *= x
    inner *= 2.0 * alpha * beta
    dx = dout * scale
    dx -= inner
    return dx


# ---------------------------------------------------------------------------- 4. ReLU
def relu_forward(x):
    """``functional.relu_forward`` and backward's mask: x -> (max(x, 0), x > 0).

    On a GPU: one kernel writes both (``kernels/relu.py``); the array code makes two passes."""
    if kernels.runs_on(x):
        return kernels.relu.forward(x)
    return functional.relu_forward(x), x > 0


def relu_backward(dout, positive):
    """``functional.relu_backward`` from forward's mask: dout * (x > 0)."""
    if kernels.runs_on(dout):
        return kernels.relu.backward(dout, positive)
    return dout * positive


# ---------------------------------------------------------------------------- 4. dropout
def dropout_forward(x, p, seed, counter, offset=0):
    """Draw mask number ``counter`` of stream ``seed`` and apply it: x -> (out, keep).

    The same mask as ``rng.uniform(xp, x.shape, seed, counter) >= p`` and the
    same ``functional.dropout_forward``, bit for bit.  ``offset`` numbers the
    elements from ``offset`` on, for a slice of a larger batch.  On a GPU: one
    kernel hashes, compares and scales (``kernels/dropout.py``), instead of some
    twenty-five array operations.
    """
    if kernels.runs_on(x):
        return kernels.dropout.forward(x, p, seed, counter, offset)
    xp = get_array_module(x)
    u = rng.uniform(xp, x.shape, seed, counter, dtype=x.dtype, offset=offset)
    keep = u >= p                       # each unit survives with probability 1 - p
    return functional.dropout_forward(x, keep, p), keep


def dropout_backward(dout, keep, p):
    """``functional.dropout_backward``: dout * keep / (1 - p), one kernel on a GPU."""
    if kernels.runs_on(dout):
        return kernels.dropout.backward(dout, keep, p)
    return functional.dropout_backward(dout, keep, p)


# ---------------------------------------------------------------------------- 4. the loss
def softmax_cross_entropy(logits, labels):
    """``functional.softmax_cross_entropy``'s loss, keeping each row's max and log-sum-exp.

    logits (N, K), labels (N,)  ->  (loss (0-d), stats (N, 2): m and log s per row)

    Backward recomputes dL/dlogits from the logits and these two numbers per
    row (``softmax_cross_entropy_backward``), so forward makes no (N, K) gradient
    that evaluation would throw away.  On a GPU: two kernels, the rows and their
    mean (``kernels/cross_entropy.py``).
    """
    if kernels.runs_on(logits):
        return kernels.cross_entropy.forward(logits, labels)
    xp = get_array_module(logits)
    N = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    shifted = logits - m
    log_s = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = (log_s[:, 0] - shifted[xp.arange(N), labels]).mean()    # -log p[n, y[n]], averaged
    return loss, xp.concatenate([m, log_s], axis=1)


def softmax_cross_entropy_backward(logits, labels, stats, dout=1.0):
    """dL/dlogits (N, K) = (p - onehot(y)) / N * dout, with p from forward's row stats."""
    if kernels.runs_on(logits):
        xp = get_array_module(logits)
        if isinstance(dout, xp.ndarray) and dout.dtype != logits.dtype:
            dout = dout.astype(logits.dtype)
        return kernels.cross_entropy.backward(logits, labels, stats, dout)
    xp = get_array_module(logits)
    N = logits.shape[0]
    dlogits = xp.exp((logits - stats[:, :1]) - stats[:, 1:])
    dlogits[xp.arange(N), labels] -= 1
    dlogits *= 1 / N
    dlogits *= dout
    return dlogits


# ---------------------------------------------------------------------------- 5. Linear
def linear_backward(dout, x, W, dW, db):
    """``functional.linear_backward`` writing dW and db in place (the layer's gradients,
    views into the flat gradient buffer): dout (N, M), x (N, D), W (M, D) -> dx (N, D).

    The same products and the same sum as the readable function: the same numbers."""
    graph.matmul(dout.T, x, out=dW)         # dout^T is read transposed in place, as in dout.T @ x
    dout.sum(axis=0, out=db)
    return graph.matmul(dout, W)


def linear_forward(x, W, b):
    """``functional.linear_forward``, x W^T + b: the same product and the same sum, the
    product through ``graph.matmul`` (where a CUDA graph's capture is cut, graph.py)."""
    out = graph.matmul(x, W.T)
    out += b
    return out
