"""Reference solutions to the lessons' exercises.  Spoilers: try the exercise first.

Each function has the name and the signature of the exercise cell it solves.
The lesson tests paste these functions' source into the exercise cells (see
``notebooks.py``) and run every notebook with them; ``tests/test_exercises.py``
feeds them to the checkers.  They use only ``get_array_module`` (imported at the
top of every lesson) and array methods both NumPy and CuPy have, so that the
pasted code runs in the notebook exactly as it runs here, on either backend.
"""
from ..backend import get_array_module


# ---------------------------------------------------------------- lesson 1: arrays
def to_nchw(images):
    """(N, H, W, C) images -> (N, C, H, W), as a new contiguous array."""
    xp = get_array_module(images)
    return xp.ascontiguousarray(images.transpose(0, 3, 1, 2))


def normalize_channels(x):
    """(N, C, H, W) -> each channel shifted to mean 0 and scaled to std 1 over (N, H, W)."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / std


# ---------------------------------------------------------------- lesson 2: linear, softmax
def linear_forward(x, W, b):
    """x (N, D), W (M, D), b (M,) -> x W^T + b, shape (N, M)."""
    return x @ W.T + b


def linear_backward(dout, x, W):
    """dout (N, M) -> (dx (N, D), dW (M, D), db (M,))."""
    dx = dout @ W
    dW = dout.T @ x
    db = dout.sum(axis=0)
    return dx, dW, db


def softmax_cross_entropy(logits, labels):
    """logits (N, K), labels (N,) -> (mean loss, dloss/dlogits (N, K))."""
    xp = get_array_module(logits)
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)    # exp() cannot overflow now
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[xp.arange(N), labels].mean()
    dlogits = xp.exp(log_probs)
    dlogits[xp.arange(N), labels] -= 1
    return loss, dlogits / N


# ---------------------------------------------------------------- lesson 3: convolution
def im2col(x, kh, kw, stride=1, padding=0):
    """(N, C, H, W) -> cols (C*kh*kw, N*OH*OW); rows ordered (c, i, j), columns (n, oh, ow)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    xpad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # what every window sees at kernel offset (i, j): one strided slice
            patch = xpad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
            cols[:, i, j] = patch.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """cols (C*kh*kw, N*OH*OW) -> (N, C, H, W), adding where windows overlap."""
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dx = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += \
                cols[:, i, j].transpose(1, 0, 2, 3)
    return dx[:, :, padding:padding + H, padding:padding + W]


def conv_forward(x, W, b, stride=1, padding=0):
    """x (N, C, H, W), W (F, C, kh, kw), b (F,) -> (N, F, OH, OW) with im2col."""
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (Wd + 2 * padding - kw) // stride + 1
    cols = im2col(x, kh, kw, stride, padding)                 # (C*kh*kw, N*OH*OW)
    y = W.reshape(F, -1) @ cols + b.reshape(F, 1)             # (F, N*OH*OW)
    return y.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)


def conv_backward(dout, x, W, stride=1, padding=0):
    """dout (N, F, OH, OW) -> (dx (N, C, H, W), dW (F, C, kh, kw), db (F,))."""
    F, _, kh, kw = W.shape
    dy = dout.transpose(1, 0, 2, 3).reshape(F, -1)            # (F, N*OH*OW), like W @ cols
    cols = im2col(x, kh, kw, stride, padding)
    dW = (dy @ cols.T).reshape(W.shape)
    db = dout.sum(axis=(0, 2, 3))
    dx = col2im(W.reshape(F, -1).T @ dy, x.shape, kh, kw, stride, padding)
    return dx, dW, db


# ---------------------------------------------------------------- lesson 4: activations
def relu_forward(x):
    """max(0, x), element-wise."""
    xp = get_array_module(x)
    return xp.maximum(x, 0)


def relu_backward(dout, x):
    """dout where x > 0, else 0."""
    return dout * (x > 0)


def tanh_backward(dout, out):
    """dout * (1 - tanh(x)^2), from the forward's output out = tanh(x)."""
    return dout * (1 - out * out)


# ---------------------------------------------------------------- lesson 5: pooling, LRN
def maxpool_forward(x, kernel_size=3, stride=2):
    """(N, C, H, W) -> (N, C, OH, OW), the maximum of each kernel_size^2 window."""
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
    """dout (N, C, OH, OW) -> dx (N, C, H, W): each dout goes to its window's maximum."""
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


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """b[c] = a[c] / (k + alpha * sum of a[j]^2 over the `size` channels around c)^beta."""
    xp = get_array_module(x)
    C, half = x.shape[1], size // 2
    sq = xp.pad(x * x, ((0, 0), (half, half), (0, 0), (0, 0)))
    window_sum = sum(sq[:, d:d + C] for d in range(size))
    return x / (k + alpha * window_sum) ** beta


def lrn_backward(dout, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """dx[j] = dout[j] D[j]^-beta - 2 alpha beta a[j] sum_{c near j} dout[c] b[c] / D[c]."""
    xp = get_array_module(x)
    C, half = x.shape[1], size // 2

    def window_sum(a):                      # sum over the `size` channels around each c
        padded = xp.pad(a, ((0, 0), (half, half), (0, 0), (0, 0)))
        return sum(padded[:, d:d + C] for d in range(size))

    D = k + alpha * window_sum(x * x)
    out = x * D ** -beta
    return dout * D ** -beta - 2 * alpha * beta * x * window_sum(dout * out / D)


# ---------------------------------------------------------------- lesson 6: dropout, SGD
def dropout_forward(x, keep, p):
    """Inverted dropout: x * keep / (1 - p), with keep a 0/1 (bool) array like x."""
    return x * keep / (1 - p)


def dropout_backward(dout, keep, p):
    """The same mask and scale as the forward pass."""
    return dout * keep / (1 - p)


def sgd_step(w, g, v, lr, momentum=0.9, weight_decay=0.0005):
    """The paper's rule: v <- momentum v - weight_decay lr w - lr g;  w <- w + v.  -> (w, v)."""
    v = momentum * v - weight_decay * lr * w - lr * g
    return w + v, v


# ---------------------------------------------------------------- lesson 7: assembling AlexNet
def conv_output_size(size, kernel, stride=1, padding=0):
    """Positions a kernel can take along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_num_parameters(in_channels, out_channels, kernel_size, groups=1):
    """Weights (out, in/groups, k, k) plus one bias per output channel."""
    return out_channels * (in_channels // groups) * kernel_size * kernel_size + out_channels


# ---------------------------------------------------------------- lesson 8: augmentation
def hflip(x, flip):
    """(B, C, H, W) -> each image b mirrored left-right where flip[b] is True."""
    xp = get_array_module(x)
    flip = xp.asarray(flip).reshape(-1, 1, 1, 1)
    return xp.where(flip, x[:, :, :, ::-1], x)


# ---------------------------------------------------------------- lesson 9: training
def topk_accuracy(logits, labels, k=5):
    """logits (N, K), labels (N,) -> the fraction of rows whose label has one of the k highest
    logits.  The label's rank is 1 + the number of logits above its own."""
    xp = get_array_module(logits)
    true = logits[xp.arange(logits.shape[0]), labels][:, None]    # (N, 1)
    rank = 1 + (logits > true).sum(axis=1)                        # (N,)
    return float((rank <= k).mean())



# ---------------------------------------------------------------- lesson 13: faster convolutions
def f23_matrices():
    """Winograd's F(2, 3): (AT (2, 4), G (4, 3), BT (4, 4)) with y = AT [(G g) * (BT d)].

    m0 = (d0 - d2) g0,  m1 = (d1 + d2) (g0 + g1 + g2) / 2,
    m2 = (d2 - d1) (g0 - g1 + g2) / 2,  m3 = (d1 - d3) g2;  y0 = m0 + m1 + m2, y1 = m1 - m2 - m3.
    """
    AT = [[1, 1, 1, 0],
          [0, 1, -1, -1]]
    G = [[1, 0, 0],
         [0.5, 0.5, 0.5],
         [0.5, -0.5, 0.5],
         [0, 0, 1]]
    BT = [[1, 0, -1, 0],
          [0, 1, 1, 0],
          [0, -1, 1, 0],
          [0, 1, 0, -1]]
    return AT, G, BT


def winograd_tile(d, g, AT, G, BT):
    """One tile: d (n, n), g (r, r) -> Y = AT [(G g G^T) * (BT d BT^T)] AT^T, shape (m, m)."""
    U = G @ g @ G.T                   # the kernel, transformed: (n, n)
    V = BT @ d @ BT.T                 # the input tile, transformed: (n, n)
    return AT @ (U * V) @ AT.T        # n*n multiplications, then back to m x m outputs
