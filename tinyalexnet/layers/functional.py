"""The maths of every layer: one forward and one backward function each, written to be read.

Each function takes arrays and settings and returns arrays; nothing is stored.
Its docstring gives the shapes, the equation and the backward formula in full;
the layer modules and ``fast.py`` point here for them.  The layer classes
(conv.py, pool.py, ...) are thin wrappers around these functions: they hold the
parameters and their gradients, check their inputs, and keep what backward
needs between the two passes.

Conventions: a batch is NCHW, x (N, C, H, W); weights are in PyTorch's layouts;
every backward takes ``dout`` = dL/dout, the gradient of the loss with respect to
the forward's output, and returns the gradients with respect to the forward's
inputs, each of the shape of what it is the gradient of.

These functions are also the reference solutions of the lessons' exercises
(``tinyalexnet/exercises/solutions.py`` re-exports them, and the lesson tests
paste their source into the exercise cells).  So each one uses only
``get_array_module``, array methods NumPy and CuPy both have, and the functions
a lesson has built before it (``im2col``/``col2im`` for the convolution,
``maxpool_forward`` for its backward).

Most layers have a faster version of the same maths in ``fast.py`` (on a GPU,
CUDA kernels), which they run by default (``layer.fast``); ``naive.py`` has loop
versions of the forward passes that the tests check both against.
"""
from ..backend import get_array_module
from .im2col import col2im, im2col


# ---------------------------------------------------------------- fully connected
def linear_forward(x, W, b):
    """The fully connected layer: every output neuron sees every input.

    x (N, D), W (M, D), b (M,)  ->  out (N, M)

        out = x W^T + b
    """
    return x @ W.T + b


def linear_backward(dout, x, W):
    """dout (N, M), x (N, D), W (M, D)  ->  (dx (N, D), dW (M, D), db (M,))

        dx = dout W        dW = dout^T x        db = sum of dout over the batch
    """
    dx = dout @ W
    dW = dout.T @ x
    db = dout.sum(axis=0)
    return dx, dW, db


# ---------------------------------------------------------------- softmax and the loss
def log_softmax(z):
    """z (N, K) -> log p (N, K), the log of p[n, k] = exp(z[n, k]) / sum_j exp(z[n, j]).

    Subtracting each row's maximum changes no probability but keeps exp() from
    overflowing:  log p = (z - max) - log(sum_j exp(z_j - max)).
    """
    xp = get_array_module(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels):
    """The paper's softmax output and multinomial logistic loss, with its gradient.

    logits z (N, K), labels y (N,) integers in [0, K)  ->  (loss (a 0-d array), dlogits (N, K))

        p[n, k] = exp(z[n, k]) / sum_j exp(z[n, j])
        loss    = -(1/N) sum_n log p[n, y[n]]
        dlogits = (p - onehot(y)) / N

    Fusing the two is what makes the gradient this simple.  The log-softmax is
    ``log_softmax``, written out so that this function stands alone (lesson 2).
    """
    xp = get_array_module(logits)
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)    # exp() cannot overflow now
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    rows = xp.arange(N)
    loss = -log_probs[rows, labels].mean()
    dlogits = xp.exp(log_probs)
    dlogits[rows, labels] -= 1
    dlogits *= 1 / N                                          # the loss is a mean over the batch
    return loss, dlogits


# ---------------------------------------------------------------- convolution
def conv_forward(x, W, b, stride=1, padding=0, groups=1):
    """The convolutional layer: im2col, then one matrix product (one per group).

    x (N, C, H, W), W (F, C/G, kh, kw), b (F,)  ->  out (N, F, OH, OW),
    OH = (H + 2 padding - kh) // stride + 1, OW alike:

        out[n, f, oh, ow] = b[f] + sum_{c,i,j} W[f, c, i, j] x_pad[n, g Cg + c, oh s + i, ow s + j]

    where g = f // (F/G) is the group of output channel f and Cg = C/G.  Every
    window of x becomes a column of cols (C kh kw, N OH OW), every kernel a row
    of W (F, C kh kw), and W @ cols is every output at once.  With G groups the
    rows of cols and of W split into G blocks and block g of W multiplies only
    block g of cols: the paper's two GPUs, each seeing only its own channels.
    """
    N, C, H, Wd = x.shape                                         # Wd: the width (W is the weight)
    F, Cg, kh, kw = W.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (Wd + 2 * padding - kw) // stride + 1
    cols = im2col(x, kh, kw, stride, padding)                     # (C*kh*kw, N*OH*OW)
    cols = cols.reshape(groups, Cg * kh * kw, N * OH * OW)        # one block of rows per group
    y = W.reshape(groups, F // groups, Cg * kh * kw) @ cols       # (G, F/G, N*OH*OW)
    y = y.reshape(F, N, OH, OW) + b.reshape(F, 1, 1, 1)
    return y.transpose(1, 0, 2, 3)                                # (N, F, OH, OW)


def conv_backward(dout, x, W, stride=1, padding=0, groups=1):
    """dout (N, F, OH, OW), x (N, C, H, W), W (F, C/G, kh, kw)
    ->  (dx (N, C, H, W), dW (F, C/G, kh, kw), db (F,))

    The forward is y = W_mat @ cols + b per group, a fully connected layer applied
    to the columns.  With dy the gradient arranged like y, (F, N OH OW)::

        dW = dy @ cols^T        db = sum of dout over (n, oh, ow)
        dcols = W_mat^T @ dy    dx = col2im(dcols)

    col2im adds every column back into the window it came from, so a pixel seen
    by several windows gets the sum of their gradients.  (fast.py computes the
    same with the batch as the last axis of cols, and dW as one 2-D product per
    group, which BLAS and cuBLAS do without copying cols transposed.)
    """
    F, Cg, kh, kw = W.shape
    G = groups
    dy = dout.transpose(1, 0, 2, 3).reshape(G, F // G, -1)        # (G, F/G, N*OH*OW), like y
    cols = im2col(x, kh, kw, stride, padding).reshape(G, Cg * kh * kw, -1)
    dW = (dy @ cols.transpose(0, 2, 1)).reshape(W.shape)
    db = dout.sum(axis=(0, 2, 3))
    dcols = W.reshape(G, F // G, -1).transpose(0, 2, 1) @ dy      # (G, Cg*kh*kw, N*OH*OW)
    dx = col2im(dcols.reshape(G * Cg * kh * kw, -1), x.shape, kh, kw, stride, padding)
    return dx, dW, db


# ---------------------------------------------------------------- activations
def relu_forward(x):
    """The rectified linear unit, element-wise: x (any shape) -> max(0, x)."""
    xp = get_array_module(x)
    return xp.maximum(x, 0)


def relu_backward(dout, x):
    """dout where x > 0, else 0 (at x = 0 the slope is undefined; 0, as in every framework).

    Only the sign of x matters: the ReLU layer keeps just the bool mask ``x > 0``
    from forward (a quarter of the memory of x) and multiplies dout by it.
    """
    return dout * (x > 0)


def tanh_forward(x):
    """The saturating unit ReLU replaced, element-wise: x (any shape) -> tanh(x)."""
    xp = get_array_module(x)
    return xp.tanh(x)


def tanh_backward(dout, out):
    """From the forward's output out = tanh(x):  dx = dout * (1 - out^2)."""
    return dout * (1 - out * out)


# ---------------------------------------------------------------- max pooling
def maxpool_forward(x, kernel_size=3, stride=2):
    """Max pooling: the largest value in each k x k window (the paper's windows overlap).

    x (N, C, H, W)  ->  out (N, C, OH, OW),  OH = (H - k) // s + 1, OW alike:

        out[n, c, oh, ow] = max_{0 <= i, j < k} x[n, c, oh s + i, ow s + j]

    A loop over the k*k offsets of a window, not over pixels: what every window
    sees at offset (i, j) is one strided slice of x, and a running maximum over
    the k*k slices is the output.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    k, s = kernel_size, stride
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    out = xp.full((N, C, OH, OW), -xp.inf, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            xp.maximum(out, x[:, :, i:i + s * OH:s, j:j + s * OW:s], out=out)
    return out


def maxpool_backward(dout, x, kernel_size=3, stride=2):
    """dout (N, C, OH, OW), x (N, C, H, W)  ->  dx (N, C, H, W)

    Only a window's maximum moved its output, so it alone gets that window's
    dout; every other pixel gets 0.  Overlapping windows can share a maximum,
    whose gradients then add up (+=).  On a tie the first maximum in row-major
    order takes it all, as in PyTorch.
    """
    xp = get_array_module(x)
    k, s = kernel_size, stride
    OH, OW = dout.shape[2:]
    out = maxpool_forward(x, k, s)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    taken = xp.zeros(out.shape, dtype=bool)   # on a tie, only the first maximum gets it
    for i in range(k):
        for j in range(k):
            window = (slice(None), slice(None), slice(i, i + s * OH, s), slice(j, j + s * OW, s))
            winner = (x[window] == out) & ~taken
            dx[window] += dout * winner        # +=: overlapping windows share pixels
            taken |= winner
    return dx


# ---------------------------------------------------------------- local response normalisation
def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The paper's local response normalisation, across channels at each pixel.

    x (N, C, H, W)  ->  out (N, C, H, W):

        out[c] = x[c] / D[c]^beta,   D[c] = k + alpha sum_{j=max(0, c-n/2)}^{min(C-1, c+n/2)} x[j]^2

    with n = ``size`` (odd).  alpha is not divided by n (PyTorch's and Caffe's
    LRN divide it: the paper's layer is theirs with alpha * n).
    """
    xp = get_array_module(x)
    C, half = x.shape[1], size // 2
    sq = xp.pad(x * x, ((0, 0), (half, half), (0, 0), (0, 0)))   # zero channels past the edges
    window_sum = sum(sq[:, d:d + C] for d in range(size))
    return x / (k + alpha * window_sum) ** beta


def lrn_backward(dout, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """dout (N, C, H, W), x (N, C, H, W)  ->  dx (N, C, H, W)

    x[j] appears in its own numerator and in the denominators D[c] of its
    neighbours; the window is symmetric, so "c whose window holds j" is "c in
    j's window", and the chain rule gives

        dx[j] = dout[j] D[j]^-beta  -  2 alpha beta x[j] sum_{c in window(j)} dout[c] out[c] / D[c]
    """
    xp = get_array_module(x)
    C, half = x.shape[1], size // 2

    def window_sum(a):                      # sum over the `size` channels around each c
        padded = xp.pad(a, ((0, 0), (half, half), (0, 0), (0, 0)))
        return sum(padded[:, d:d + C] for d in range(size))

    D = k + alpha * window_sum(x * x)
    out = x * D ** -beta
    return dout * D ** -beta - 2 * alpha * beta * x * window_sum(dout * out / D)


# ---------------------------------------------------------------- dropout
def dropout_forward(x, keep, p):
    """Inverted dropout for one mask: keep (bool, like x) says which units survive.

        out = x * keep / (1 - p)

    Scaling the survivors by 1 / (1 - p) keeps every unit's expected value, so
    evaluation (no dropout) needs no rescaling.
    """
    return x * keep / (1 - p)


def dropout_backward(dout, keep, p):
    """The same mask and scale as the forward pass:  dx = dout * keep / (1 - p)."""
    return dout * keep / (1 - p)


# ---------------------------------------------------------------- batch normalisation
def batch_statistics(x):
    """x (N, C, H, W) -> (mean (C,), var (C,)): each channel's mean and variance over its
    M = N H W values (the variance divides by M, not M - 1)."""
    return x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))


def batchnorm_forward(x, gamma, beta, mean, var, eps=1e-5):
    """Batch normalisation (Ioffe and Szegedy, 2015), the layer that replaced LRN.

    x (N, C, H, W), gamma, beta, mean, var (C,)  ->  out (N, C, H, W):

        x_hat = (x - mean[c]) / sqrt(var[c] + eps)        out = gamma[c] x_hat + beta[c]

    Where LRN divides each activation by its neighbours across channels at one
    pixel, batch normalisation standardises each channel over the batch and the
    image, then lets the network rescale it (gamma, beta are learned).  In
    training, mean and var are the batch's own (``batch_statistics``); in
    evaluation, the running averages that training gathered.
    """
    xp = get_array_module(x)
    shape = (1, x.shape[1], 1, 1)
    x_hat = (x - mean.reshape(shape)) / xp.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * x_hat + beta.reshape(shape)


def batchnorm_backward(dout, x, gamma, mean, var, eps=1e-5, batch_stats=True):
    """dout (N, C, H, W), x (N, C, H, W), gamma, mean, var (C,): the statistics forward used
    ->  (dx (N, C, H, W), dgamma (C,), dbeta (C,))

        dbeta = sum of dout        dgamma = sum of dout x_hat        (over N, H, W)

    With fixed statistics (evaluation) x_hat is x shifted and scaled, so
    dx = gamma dout / sqrt(var + eps).  With the batch's own (``batch_stats``,
    training), the mean and the variance move with every x of the channel too,
    and the chain rule through both adds two terms (means over the N H W values):

        dx = gamma / sqrt(var + eps) * (dout - mean(dout) - x_hat * mean(dout * x_hat))
    """
    xp = get_array_module(x)
    shape = (1, x.shape[1], 1, 1)
    inv_std = 1 / xp.sqrt(var.reshape(shape) + eps)
    x_hat = (x - mean.reshape(shape)) * inv_std
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    if not batch_stats:
        return gamma.reshape(shape) * inv_std * dout, dgamma, dbeta
    M = x.size // x.shape[1]                     # values per channel
    dx = gamma.reshape(shape) * inv_std * (dout - dbeta.reshape(shape) / M
                                           - x_hat * dgamma.reshape(shape) / M)
    return dx, dgamma, dbeta
