"""Reference solutions to the lessons' exercises.  Spoilers: try the exercise first.

Each function has the name and the signature of the exercise cell it solves.
Where an exercise is a layer's maths (lessons 2-5, dropout in 6, conv_output_size
in 7), the solution is the package's own function from
``tinyalexnet/layers/functional.py`` or ``im2col.py``, imported below: what the
lessons show as the answer is the code the layers run.  The rest (arrays, SGD,
counting parameters, augmentation, accuracy) is written here.
The lesson tests paste these functions' source into the exercise cells (see
``notebooks.py``) and run every notebook with them; ``tests/test_exercises.py``
feeds them to the checkers.  They use only ``get_array_module`` (imported at the
top of every lesson) and array methods both NumPy and CuPy have, so that the
pasted code runs in the notebook exactly as it runs here, on either backend.
"""
from ..backend import get_array_module
# Lessons 2-7, the layers' maths: the package's own functions, which the layers run.
from ..layers.functional import (conv_backward, conv_forward, dropout_backward, dropout_forward,
                                 linear_backward, linear_forward, lrn_backward, lrn_forward,
                                 maxpool_backward, maxpool_forward, relu_backward, relu_forward,
                                 softmax_cross_entropy, tanh_backward)
from ..layers.im2col import col2im, conv_output_size, im2col
# Lesson 12's learning-rate range test: the package's own function, which the lesson runs.
from ..diagnostics import lr_range_test


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


# ---------------------------------------------------------------- lesson 6: SGD
def sgd_step(w, g, v, lr, momentum=0.9, weight_decay=0.0005):
    """The paper's rule: v <- momentum v - weight_decay lr w - lr g;  w <- w + v.  -> (w, v)."""
    v = momentum * v - weight_decay * lr * w - lr * g
    return w + v, v



def adam_step(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step at step number t (from 1): m, v running means of g and g^2, corrected
    for their start at 0.  -> (w, m, v)."""
    xp = get_array_module(w)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return w - lr * m_hat / (xp.sqrt(v_hat) + eps), m, v

# ---------------------------------------------------------------- lesson 7: assembling AlexNet
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
    logits.  As the trainer's topk_correct counts: ties count against the prediction, so the
    label's rank is the number of logits at least as high as its own (itself included)."""
    xp = get_array_module(logits)
    true = logits[xp.arange(logits.shape[0]), labels][:, None]    # (N, 1)
    rank = (logits >= true).sum(axis=1)                           # (N,), 1 for a clear winner
    return float((rank <= k).mean())


# ---------------------------------------------------------------- lesson 10: one buffer
def flatten(arrays):
    """[arrays of any shapes, one dtype] -> (flat, views): flat (total size,) holds every array
    end to end; views[k] has arrays[k]'s shape and values and is a view into flat."""
    xp = get_array_module(arrays[0])
    flat = xp.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
    views, offset = [], 0
    for a in arrays:
        flat[offset:offset + a.size] = a.reshape(-1)
        views.append(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return flat, views


# ---------------------------------------------------------------- lesson 11: looking inside
def saliency(model, x, classes):
    """|d score[n, classes[n]] / d x[n]|, the largest over the channels: (N, C, H, W) -> (N, H, W).

    The score is the logit, before the softmax.  conv1 skips its input gradient in
    training (nothing upstream needs it): switch it on first."""
    xp = get_array_module(x)
    model["conv1"].input_grad = True
    scores = model.forward(x)                                  # (N, K)
    dout = xp.zeros_like(scores)
    dout[xp.arange(x.shape[0]), classes] = 1                   # d s_c / d scores: one 1 per row
    return xp.abs(model.backward(dout)).max(axis=1)


# ---------------------------------------------------------------- lesson 12: when training fails
def dead_fraction(activations):
    """ReLU outputs (N, C, H, W) or (N, F) -> the fraction of units (channels, features) that
    are 0 for every image and every position."""
    axes = (0,) + tuple(range(2, activations.ndim))            # all but the unit axis
    return float((activations.max(axis=axes) <= 0).mean())


def update_ratio(before, after):
    """|after - before| / |before| (Frobenius norms): how far one step moved a weight array."""
    xp = get_array_module(before)
    return float(xp.sqrt(((after - before) ** 2).sum()) / xp.sqrt((before ** 2).sum()))


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


# ---------------------------------------------------------------- lesson 14: two towers
def gather_backward(dy, rank, swap):
    """The backward of the towers' all-gather, on tower ``rank`` (0 or 1).

    Forward, both towers built y = [x_0 | x_1] (N, C, ...) along axis 1.  ``dy`` (N, C, ...)
    is what this tower's next layer sends back: its part of dL/dy.  The other tower's layer
    read y too, so dL/dx_rank = dy_0[:, cols_rank] + dy_1[:, cols_rank].  Send the other
    tower its columns of my dy, receive its columns for mine (``swap``), add: (N, C/2, ...).
    """
    half = dy.shape[1] // 2
    mine = slice(rank * half, (rank + 1) * half)
    theirs = slice((1 - rank) * half, (2 - rank) * half)
    return dy[:, mine] + swap(dy[:, theirs])
