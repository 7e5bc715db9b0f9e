"""The exercise checkers pass the reference solutions and fail wrong ones; the Tanh layer.

A checker is only useful if it can fail: for every exercise, at least one
plausible mistake (a missing term, a missing scale, an overwrite instead of an
accumulation, a swapped axis) must be reported as FAIL, and the reference
solution as PASS, on every backend.
"""
import types
from pathlib import Path

import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet import exercises as ex
from tinyalexnet.errors import StateError
from tinyalexnet.exercises import checkers, report
from tinyalexnet.exercises import solutions as sol
from tinyalexnet.exercises.notebooks import (exercise_cells, fill_solutions, has_outputs,
                                             solution_source, strip_outputs)
from tinyalexnet.gradcheck import check_layer
from tinyalexnet.layers.tanh import Tanh


@pytest.fixture(autouse=True)
def not_strict():
    """Tests see results; the one strict-mode test switches it on itself."""
    ex.set_strict(False)
    yield
    ex.set_strict(False)


# (checker, reference solution) for every exercise that runs on a backend
BACKEND_EXERCISES = [
    (ex.check_to_nchw, sol.to_nchw), (ex.check_normalize_channels, sol.normalize_channels),
    (ex.check_linear_forward, sol.linear_forward), (ex.check_linear_backward, sol.linear_backward),
    (ex.check_softmax_cross_entropy, sol.softmax_cross_entropy),
    (ex.check_im2col, sol.im2col), (ex.check_col2im, sol.col2im),
    (ex.check_conv_forward, sol.conv_forward), (ex.check_conv_backward, sol.conv_backward),
    (ex.check_relu_forward, sol.relu_forward), (ex.check_relu_backward, sol.relu_backward),
    (ex.check_tanh_backward, sol.tanh_backward),
    (ex.check_maxpool_forward, sol.maxpool_forward),
    (ex.check_maxpool_backward, sol.maxpool_backward),
    (ex.check_lrn_forward, sol.lrn_forward), (ex.check_lrn_backward, sol.lrn_backward),
    (ex.check_dropout_forward, sol.dropout_forward),
    (ex.check_dropout_backward, sol.dropout_backward), (ex.check_sgd_step, sol.sgd_step),
    (ex.check_adam_step, sol.adam_step),
    (ex.check_hflip, sol.hflip), (ex.check_topk_accuracy, sol.topk_accuracy),
    (ex.check_flatten, sol.flatten),
    (ex.check_saliency, sol.saliency), (ex.check_dead_fraction, sol.dead_fraction),
    (ex.check_update_ratio, sol.update_ratio),
    (ex.check_winograd_tile, sol.winograd_tile),
]


@pytest.mark.parametrize("checker, solution", BACKEND_EXERCISES, ids=lambda f: f.__name__)
def test_reference_solution_passes(checker, solution, backend_name, capsys):
    result = checker(solution, backend=backend_name)
    assert result.passed, result.report()
    assert result.rows and all(r.ok for r in result.rows)
    assert "PASS" in capsys.readouterr().out


ARITHMETIC = [(ex.check_conv_output_size, sol.conv_output_size),
              (ex.check_conv_num_parameters, sol.conv_num_parameters),
              (ex.check_lr_range_test, sol.lr_range_test),
              (ex.check_f23_matrices, sol.f23_matrices)]


@pytest.mark.parametrize("checker, solution", ARITHMETIC,
                         ids=lambda f: f.__name__)
def test_reference_solution_passes_arithmetic(checker, solution):
    assert checker(solution).passed


def test_every_checker_is_covered():
    covered = {c.__name__ for c, _ in BACKEND_EXERCISES} | {c.__name__ for c, _ in ARITHMETIC}
    covered.add("check_gather_backward")     # two towers at once: its own tests, at the end
    assert covered == {name for name in ex.__all__ if name.startswith("check_")}


# ------------------------------------------------------------------ wrong implementations
def _xp(a):
    return backend.get_array_module(a)


def linear_backward_db_first_sample(dout, x, W):
    dx, dW, _ = sol.linear_backward(dout, x, W)
    return dx, dW, dout[0]                                   # should sum over the batch


def linear_backward_dW_transposed(dout, x, W):
    dx, _, db = sol.linear_backward(dout, x, W)
    return dx, x.T @ dout, db                                # (D, M) instead of (M, D)


def softmax_ce_no_mean(logits, labels):
    loss, d = sol.softmax_cross_entropy(logits, labels)
    return loss, d * logits.shape[0]                         # forgot the 1/N


def softmax_ce_unstable(logits, labels):
    xp = _xp(logits)
    with np.errstate(all="ignore"):
        p = xp.exp(logits) / xp.exp(logits).sum(axis=1, keepdims=True)   # overflows for big logits
        N = logits.shape[0]
        loss = -xp.log(p[xp.arange(N), labels]).mean()
    d = p.copy()
    d[xp.arange(N), labels] -= 1
    return loss, d / N


def im2col_rows_kernel_first(x, kh, kw, stride=1, padding=0):
    cols = sol.im2col(x, kh, kw, stride, padding)
    C = x.shape[1]
    return cols.reshape(C, kh * kw, -1).transpose(1, 0, 2).reshape(C * kh * kw, -1)


def col2im_overwrites(cols, x_shape, kh, kw, stride=1, padding=0):
    xp = _xp(cols)
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dx = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] = \
                cols[:, i, j].transpose(1, 0, 2, 3)           # '=' loses the overlaps
    return dx[:, :, padding:padding + H, padding:padding + W]


def conv_forward_no_bias(x, W, b, stride=1, padding=0):
    return sol.conv_forward(x, W, b * 0, stride, padding)


def conv_backward_db_one_position(dout, x, W, stride=1, padding=0):
    dx, dW, _ = sol.conv_backward(dout, x, W, stride, padding)
    return dx, dW, dout[:, :, 0, 0].sum(axis=0)              # the bias is used at every position


def conv_backward_dx_overwrites(dout, x, W, stride=1, padding=0):
    F, _, kh, kw = W.shape
    dx, dW, db = sol.conv_backward(dout, x, W, stride, padding)
    dy = dout.transpose(1, 0, 2, 3).reshape(F, -1)
    return col2im_overwrites(W.reshape(F, -1).T @ dy, x.shape, kh, kw, stride, padding), dW, db


def maxpool_backward_overwrites(dout, x, kernel_size=3, stride=2):
    xp = _xp(x)
    k, s = kernel_size, stride
    OH, OW = dout.shape[2:]
    out = sol.maxpool_forward(x, k, s)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            window = (slice(None), slice(None), slice(i, i + s * OH, s), slice(j, j + s * OW, s))
            winner = x[window] == out
            # a second window won by the same pixel replaces the first one's gradient
            dx[window] = dx[window] * ~winner + dout * winner
    return dx


def maxpool_backward_everywhere(dout, x, kernel_size=3, stride=2):
    xp = _xp(x)
    k, s = kernel_size, stride
    OH, OW = dout.shape[2:]
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            # average pooling's gradient, not max pooling's
            dx[:, :, i:i + s * OH:s, j:j + s * OW:s] += dout / (k * k)
    return dx


def col2im_crop_off_by_one(cols, x_shape, kh, kw, stride=1, padding=0):
    N, C, H, W = x_shape
    padded = sol.col2im(cols, (N, C, H + 2 * padding, W + 2 * padding), kh, kw, stride, 0)
    return padded[:, :, padding + 1:padding + 1 + H, padding:padding + W]   # one row too low


def col2im_swapped_offsets(cols, x_shape, kh, kw, stride=1, padding=0):
    xp = _xp(cols)
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = cols.reshape(C, kw, kh, N, OH, OW)                 # rows read as (c, j, i)
    dx = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += \
                cols[:, j, i].transpose(1, 0, 2, 3)
    return dx[:, :, padding:padding + H, padding:padding + W]


def with_helpers(function, **helpers):
    """``function`` as if defined in a notebook whose namespace holds these helpers."""
    return types.FunctionType(function.__code__, {**function.__globals__, **helpers},
                              function.__name__, function.__defaults__)


def im2col_kernel_first(x, kh, kw, stride=1, padding=0):
    return im2col_rows_kernel_first(x, kh, kw, stride, padding)


def maxpool_backward_every_tie(dout, x, kernel_size=3, stride=2):
    xp = _xp(x)
    k, s = kernel_size, stride
    OH, OW = dout.shape[2:]
    out = sol.maxpool_forward(x, k, s)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            window = (slice(None), slice(None), slice(i, i + s * OH, s), slice(j, j + s * OW, s))
            dx[window] += dout * (x[window] == out)      # every tied maximum gets it
    return dx


def maxpool_backward_last_tie(dout, x, kernel_size=3, stride=2):
    xp = _xp(x)
    k, s = kernel_size, stride
    OH, OW = dout.shape[2:]
    out = sol.maxpool_forward(x, k, s)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    taken = xp.zeros(out.shape, dtype=bool)
    for i in reversed(range(k)):                         # the last maximum wins a tie
        for j in reversed(range(k)):
            window = (slice(None), slice(None), slice(i, i + s * OH, s), slice(j, j + s * OW, s))
            winner = (x[window] == out) & ~taken
            dx[window] += dout * winner
            taken |= winner
    return dx


def lrn_forward_alpha_over_n(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    return sol.lrn_forward(x, size, alpha / size, beta, k)   # PyTorch's convention, not the paper's


def lrn_backward_first_term_only(dout, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    xp = _xp(x)
    half, C = size // 2, x.shape[1]
    sq = xp.pad(x * x, ((0, 0), (half, half), (0, 0), (0, 0)))
    D = k + alpha * sum(sq[:, d:d + C] for d in range(size))
    return dout * D ** -beta                                 # forgets the neighbours' denominators


def lrn_backward_sign_flipped(dout, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    first = lrn_backward_first_term_only(dout, x, size, alpha, beta, k)
    return 2 * first - sol.lrn_backward(dout, x, size, alpha, beta, k)   # + instead of -


def sgd_decay_without_lr(w, g, v, lr, momentum=0.9, weight_decay=0.0005):
    v = momentum * v - weight_decay * w - lr * g
    return w + v, v


def sgd_pytorch_style(w, g, v, lr, momentum=0.9, weight_decay=0.0005):
    v = momentum * v + g + weight_decay * w
    return w - lr * v, v                                     # same w only while v is ignored


def adam_without_bias_correction(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return w - lr * m / (_xp(w).sqrt(v) + eps), m, v


def adam_eps_inside_sqrt(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return w - lr * m_hat / _xp(w).sqrt(v_hat + eps), m, v


def adam_keeps_corrected_moments(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = (beta1 * m + (1 - beta1) * g) / (1 - beta1 ** t)      # the corrected values become
    v = (beta2 * v + (1 - beta2) * g * g) / (1 - beta2 ** t)  # the state: right at step 1 only
    return w - lr * m / (_xp(w).sqrt(v) + eps), m, v


def topk_counts_instead_of_fraction(logits, labels, k=5):
    return float(sol.topk_accuracy(logits, labels, k) * len(labels))


def topk_rank_off_by_one(logits, labels, k=5):
    xp = _xp(logits)
    true = logits[xp.arange(len(labels)), labels][:, None]
    return float(((logits > true).sum(axis=1) <= k).mean())      # top-(k+1), in effect


def topk_ties_count_for(logits, labels, k=5):
    """The old reference solution: only strictly higher scores push the label down."""
    xp = _xp(logits)
    true = logits[xp.arange(len(labels)), labels][:, None]
    return float((1 + (logits > true).sum(axis=1) <= k).mean())


def to_nchw_view(images):
    return images.transpose(0, 3, 1, 2)                      # right values, a strided view


def normalize_sample_std(x):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / x.std(axis=(0, 2, 3), keepdims=True, ddof=1)      # N - 1


def normalize_without_keepdims(x):
    return (x - x.mean(axis=(0, 2, 3))) / x.std(axis=(0, 2, 3))          # (C,) meets W


def normalize_with_eps(x):
    """Not a mistake: an eps guards a constant channel, as batch normalisation does."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-5)


def normalize_with_eps_in_the_variance(x):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / _xp(x).sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)


def softmax_ce_log_of_underflowed_p(logits, labels):
    """Shifted, so the gradient is stable; but -log(p) of a p that underflowed to 0 is inf."""
    xp = _xp(logits)
    N = logits.shape[0]
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        loss = -xp.log(p[xp.arange(N), labels]).mean()
    d = p.copy()
    d[xp.arange(N), labels] -= 1
    return loss, d / N


def flatten_copies(arrays):
    """Right values, but the "views" are the arrays themselves: an update of flat misses them."""
    xp = _xp(arrays[0])
    return xp.concatenate([a.reshape(-1) for a in arrays]), list(arrays)


def flatten_unshaped(arrays):
    """Slices of flat, never reshaped."""
    flat = _xp(arrays[0]).concatenate([a.reshape(-1) for a in arrays])
    views, offset = [], 0
    for a in arrays:
        views.append(flat[offset:offset + a.size])
        offset += a.size
    return flat, views


def flatten_overlapping(arrays):
    """Every slice starts one element too late after the first (off by one): right shapes, but
    the last element of one array is read as the first of the next."""
    xp = _xp(arrays[0])
    flat = xp.concatenate([a.reshape(-1) for a in arrays] + [xp.zeros(len(arrays), arrays[0].dtype)])
    views, offset = [], 0
    for k, a in enumerate(arrays):
        views.append(flat[offset + min(k, 1):offset + min(k, 1) + a.size].reshape(a.shape))
        offset += a.size
    return flat[:-len(arrays)], views


def hflip_in_place(x, flip):
    """Right result, but the caller's batch is mirrored too."""
    for b in range(x.shape[0]):
        if bool(flip[b]):
            x[b] = x[b, :, :, ::-1].copy()
    return x


def saliency_without_input_grad(model, x, classes):
    scores = model.forward(x)                                # conv1 still skips dx: None back
    dout = _xp(x).zeros_like(scores)
    dout[_xp(x).arange(x.shape[0]), classes] = 1
    return abs(model.backward(dout)).max(axis=1)


def saliency_signed(model, x, classes):
    model["conv1"].input_grad = True
    scores = model.forward(x)
    dout = _xp(x).zeros_like(scores)
    dout[_xp(x).arange(x.shape[0]), classes] = 1
    return model.backward(dout).max(axis=1)                  # no absolute value


def saliency_summed_channels(model, x, classes):
    model["conv1"].input_grad = True
    scores = model.forward(x)
    dout = _xp(x).zeros_like(scores)
    dout[_xp(x).arange(x.shape[0]), classes] = 1
    return abs(model.backward(dout)).sum(axis=1)             # sum, not max


def saliency_every_class(model, x, classes):
    model["conv1"].input_grad = True
    scores = model.forward(x)
    return abs(model.backward(_xp(x).ones_like(scores))).max(axis=1)   # all scores at once


def saliency_of_the_loss(model, x, classes):
    from tinyalexnet.layers import SoftmaxCrossEntropy
    model["conv1"].input_grad = True
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), classes)
    return abs(model.backward(loss.backward())).max(axis=1)  # the loss's gradient, not a score's


def dead_per_position(a):
    return float((a == 0).mean())


def dead_over_batch_only(a):
    return float((a.max(axis=0) <= 0).mean())


def alive_fraction(a):
    return 1 - sol.dead_fraction(a)


def update_ratio_elementwise(before, after):
    return float((abs(after - before) / abs(before)).mean())


def update_ratio_squared(before, after):
    return float(((after - before) ** 2).sum() / (before ** 2).sum())


def update_ratio_over_after(before, after):
    return float(_xp(before).sqrt(((after - before) ** 2).sum() / (after ** 2).sum()))


def range_test_linear_rates(step, low=1e-5, high=1.0, steps=100, explode=4.0):
    rates, losses = [], []
    for k in range(steps):
        rate = low + (high - low) * k / (steps - 1)          # linear, not geometric
        loss = float(step(rate))
        rates.append(rate)
        losses.append(loss)
        if not abs(loss) < float("inf") or loss > explode * min(losses):
            break
    return rates, losses


def range_test_never_stops(step, low=1e-5, high=1.0, steps=100, explode=4.0):
    factor = (high / low) ** (1 / (steps - 1))
    rates = [low * factor ** k for k in range(steps)]
    return rates, [float(step(r)) for r in rates]


def range_test_against_the_previous_loss(step, low=1e-5, high=1.0, steps=100, explode=4.0):
    factor = (high / low) ** (1 / (steps - 1))
    rates, losses = [], []
    for k in range(steps):
        loss = float(step(low * factor ** k))
        if losses and loss > losses[-1]:                     # stops at the first rise, unrecorded
            break
        rates.append(low * factor ** k)
        losses.append(loss)
    return rates, losses


# (checker, a plausible wrong solution, what the first hint must say about it)
WRONG = [
    (ex.check_to_nchw, lambda im: _xp(im).ascontiguousarray(im.transpose(0, 3, 2, 1)),
     "transpose the axes (0, 3, 1, 2)"),
    (ex.check_to_nchw, to_nchw_view, "a view of the input"),
    (ex.check_normalize_channels, lambda x: (x - x.mean()) / x.std(), "whole array at once"),
    (ex.check_normalize_channels, normalize_sample_std, "ddof=1"),
    (ex.check_normalize_channels, normalize_without_keepdims, "keepdims=True"),
    (ex.check_normalize_channels, lambda x: x - x.mean(axis=(0, 2, 3), keepdims=True),
     "divided by its standard deviation"),
    (ex.check_linear_forward, lambda x, W, b: x @ W.T, "b broadcasts"),
    (ex.check_linear_backward, linear_backward_db_first_sample, "db = dout summed"),
    (ex.check_linear_backward, linear_backward_dW_transposed, "dW = dout.T @ x (M, D)"),
    (ex.check_softmax_cross_entropy, softmax_ce_no_mean, "/ N"),
    (ex.check_softmax_cross_entropy, softmax_ce_unstable, "subtract each row's maximum"),
    (ex.check_softmax_cross_entropy, softmax_ce_log_of_underflowed_p, "log-sum-exp"),
    (ex.check_im2col, im2col_rows_kernel_first, "rows run over (c, i, j)"),
    (ex.check_col2im, col2im_overwrites, "use += into the slice"),
    (ex.check_col2im, col2im_crop_off_by_one, "the crop is off by one"),
    (ex.check_col2im, col2im_swapped_offsets, "this is not about +="),
    (ex.check_conv_forward, conv_forward_no_bias, "add the bias"),
    (ex.check_conv_backward, conv_backward_db_one_position, "db = dout summed over (N, OH, OW)"),
    (ex.check_conv_backward, conv_backward_dx_overwrites, "dx = col2im"),
    (ex.check_relu_forward, lambda x: abs(x), "zeroes negatives"),
    (ex.check_relu_backward, lambda dout, x: dout, "mask (x > 0)"),
    (ex.check_tanh_backward, lambda dout, out: dout * (1 - out), "1 - out**2"),
    (ex.check_maxpool_forward, lambda x, k=3, s=2: sol.maxpool_forward(x, k, s) * 0.5,
     "window (oh, ow) covers"),
    (ex.check_maxpool_backward, maxpool_backward_overwrites, "ADD the gradients (+=)"),
    (ex.check_maxpool_backward, maxpool_backward_everywhere, "it alone gets that window's dout"),
    (ex.check_maxpool_backward, maxpool_backward_every_tie, "on a tie"),
    (ex.check_maxpool_backward, maxpool_backward_last_tie, "on a tie"),
    (ex.check_lrn_forward, lrn_forward_alpha_over_n, "alpha is NOT divided by size"),
    (ex.check_lrn_backward, lrn_backward_first_term_only, "you have the first term"),
    (ex.check_lrn_backward, lrn_backward_sign_flipped, "inside the sums D[c] of its neighbours"),
    (ex.check_dropout_forward, lambda x, keep, p: x * keep, "1 / (1 - p)"),
    (ex.check_dropout_backward, lambda dout, keep, p: dout * keep, "keep / (1 - p)"),
    (ex.check_sgd_step, sgd_decay_without_lr, "multiplies the weight decay by lr"),
    (ex.check_sgd_step, sgd_pytorch_style, "w <- w + v"),
    (ex.check_adam_step, adam_without_bias_correction, "divide m by 1 - beta1**t"),
    (ex.check_adam_step, adam_eps_inside_sqrt, "add eps after it"),
    (ex.check_adam_step, adam_keeps_corrected_moments, "keep m and v themselves uncorrected"),
    (ex.check_hflip, lambda x, flip: x[:, :, :, ::-1], "picks per image"),   # mirrors every image
    (ex.check_hflip, lambda x, flip: _xp(x).where(_xp(x).asarray(flip).reshape(-1, 1, 1, 1),
                                                  x[:, :, ::-1, :], x),   # upside down
     "x[:, :, :, ::-1] mirrors"),
    (ex.check_hflip, hflip_in_place, "changed the batch it was given"),
    (ex.check_topk_accuracy, topk_counts_instead_of_fraction, "divided by the number of images"),
    (ex.check_topk_accuracy, topk_rank_off_by_one, "it counts itself"),
    (ex.check_topk_accuracy, topk_ties_count_for, "a tie counts against the prediction"),
    (ex.check_flatten, flatten_copies, "not views of flat"),
    (ex.check_flatten, flatten_unshaped, "reshape the slice"),
    (ex.check_flatten, flatten_overlapping, "overlap or leave gaps"),
    (ex.check_saliency, saliency_without_input_grad, "input_grad = True"),
    (ex.check_saliency, saliency_signed, "take the absolute value"),
    (ex.check_saliency, saliency_summed_channels, "largest absolute value (max over axis 1)"),
    (ex.check_saliency, saliency_every_class, "ONE score per image"),
    (ex.check_saliency, saliency_of_the_loss, "the logit, before the softmax"),
    (ex.check_dead_fraction, dead_per_position, "a unit is a whole channel"),
    (ex.check_dead_fraction, dead_over_batch_only, "reduced over the batch only"),
    (ex.check_dead_fraction, alive_fraction, "ALIVE"),
    (ex.check_update_ratio, update_ratio_elementwise, "weight by weight"),
    (ex.check_update_ratio, update_ratio_squared, "square root"),
    (ex.check_update_ratio, update_ratio_over_after, "BEFORE the step"),
    (ex.check_lr_range_test, range_test_linear_rates, "same FACTOR at every step"),
    (ex.check_lr_range_test, range_test_never_stops, "stop once the loss explodes"),
    (ex.check_lr_range_test, range_test_against_the_previous_loss, "LOWEST loss so far"),
]


@pytest.mark.parametrize("checker, wrong, hint", WRONG,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(WRONG)])
def test_wrong_implementation_fails_with_the_hint_that_names_it(checker, wrong, hint, capsys,
                                                               fresh_results):
    """The planted mistake fails, and the FIRST hint is the one about that mistake (a first
    failure: hints that lead before they tell, LRN's, give more on later ones)."""
    result = checker(wrong)
    assert not result.passed
    assert result.attempted
    out = capsys.readouterr().out
    assert "FAIL" in out and "hint:" in out
    assert hint in result.hints[0], _hints(result)


@pytest.mark.parametrize("variant", [normalize_with_eps, normalize_with_eps_in_the_variance],
                         ids=lambda f: f.__name__)
def test_normalize_accepts_an_eps(variant):
    """An eps that guards a constant channel is not a mistake (the lesson says so)."""
    assert ex.check_normalize_channels(variant).passed


def test_normalize_with_a_large_eps_fails():
    def big_eps(x):
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        return (x - mean) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-2)
    assert not ex.check_normalize_channels(big_eps).passed


def test_the_view_is_caught_on_every_backend(backend_name):
    result = ex.check_to_nchw(to_nchw_view, backend=backend_name)
    assert not result.passed and result.hints == [checkers.TO_NCHW_VIEW_HINT]
    assert [r.ok for r in result.rows] == [True, False]           # values right, layout wrong


def test_hflip_in_place_is_caught_on_every_backend(backend_name):
    result = ex.check_hflip(hflip_in_place, backend=backend_name)
    assert not result.passed and result.hints[0] == checkers.HFLIP_IN_PLACE_HINT
    assert result.rows[0].ok                                     # its result was right


def test_softmax_log_hint_only_for_the_log_mistake():
    result = ex.check_softmax_cross_entropy(softmax_ce_log_of_underflowed_p)
    assert result.hints == [checkers.SOFTMAX_LOG_HINT], _hints(result)
    assert [r.ok for r in result.rows] == [True, True, True, False, True]
    unstable = ex.check_softmax_cross_entropy(softmax_ce_unstable)
    assert unstable.hints == [checkers.SOFTMAX_SHIFT_HINT], _hints(unstable)


def test_wrong_arithmetic_fails():
    assert not ex.check_conv_output_size(lambda size, k, s=1, p=0: (size + 2 * p - k) // s).passed
    ignores_groups = lambda cin, cout, k, g=1: cout * cin * k * k + cout      # noqa: E731
    assert not ex.check_conv_num_parameters(ignores_groups).passed
    assert not ex.check_conv_output_size(lambda size, k, s=1, p=0: None).passed


# lesson 13: Winograd's F(2, 3) and one 2-D tile
def f23_last_sign_flipped():
    AT, G, BT = sol.f23_matrices()
    return [AT[0], [0, 1, -1, 1]], G, BT                     # y1 = m1 - m2 + m3: wrong sign


def f23_without_halves():
    AT, G, BT = sol.f23_matrices()
    return AT, [[2 * v if abs(v) == 0.5 else v for v in row] for row in G], BT


def winograd_tile_one_sided(d, g, AT, G, BT):
    return AT @ ((G @ g @ G.T) * (BT @ d @ BT)) @ AT.T       # B^T d B^T: forgot a transpose


def winograd_tile_rows_only(d, g, AT, G, BT):
    return AT @ ((G @ g) * (BT @ d)[:, :g.shape[1]])         # the 1-D transform, rows only


WRONG_13 = [(ex.check_winograd_tile, winograd_tile_one_sided),
            (ex.check_winograd_tile, winograd_tile_rows_only)]


def f23_B_not_BT():
    AT, G, BT = sol.f23_matrices()
    return AT, G, np.array(BT).T                             # B where B^T belongs


def f23_sign_error_in_G():
    AT, G, BT = sol.f23_matrices()
    G = [list(row) for row in G]
    G[2][1] = 0.5                                            # m2's kernel: g0 + g1 + g2, not -g1
    return AT, G, BT


def f23_y1_adds_wrong_products():
    AT, G, BT = sol.f23_matrices()
    return [AT[0], [0, 1, 1, -1]], G, BT                     # y1 = m1 + m2 - m3


def f23_sign_error_in_a_row_of_BT():
    AT, G, BT = sol.f23_matrices()
    BT = [list(row) for row in BT]
    BT[0][2] = 1                                             # m0 = (d0 + d2) g0
    return AT, G, BT


@pytest.mark.parametrize("wrong, hint", [
    (f23_last_sign_flipped, "m3 comes out -1 times"),
    (f23_without_halves, "m1 comes out 2 times, m2 comes out 2 times"),
    (f23_B_not_BT, "you wrote B, not B^T"),
    (f23_sign_error_in_G, "row 2 of G is wrong, and only it"),
    (f23_sign_error_in_a_row_of_BT, "row 0 of B^T is wrong, and only it"),
    (f23_y1_adds_wrong_products, "only row 1 of A^T needs to change"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_wrong_f23_matrices_fail_with_the_hint_that_names_them(wrong, hint, capsys):
    """The hint names what is wrong, and blames A^T only when A^T is what is wrong."""
    result = ex.check_f23_matrices(wrong)
    assert result.attempted and not result.passed
    out = capsys.readouterr().out
    assert "FAIL" in out and "hint:" in out
    assert len(result.hints) == 1 and hint in result.hints[0], _hints(result)
    if "A^T needs" not in hint:
        assert "row 0 of A^T" not in result.hints[0] and "row 1 of A^T" not in result.hints[0]


def test_f23_matrices_wrong_shape_is_named(capsys):
    AT, G, BT = sol.f23_matrices()
    result = ex.check_f23_matrices(lambda: (AT, BT, G))
    assert not result.passed and "G: expected shape (4, 3)" in result.problem


def test_f23_checker_passes_other_valid_matrices():
    """Any correct F(2, 3) passes, not only the paper's: Toom-Cook with other points."""
    from tinyalexnet.layers.winograd import winograd_matrices
    w = winograd_matrices(2, 3, (0, 2, -0.5))
    assert ex.check_f23_matrices(lambda: (w.AT, w.G, w.BT)).passed


@pytest.mark.parametrize("checker, wrong", WRONG_13, ids=lambda f: f.__name__)
def test_wrong_winograd_tile_fails(checker, wrong, backend_name, capsys):
    result = checker(wrong, backend=backend_name)
    assert result.attempted and not result.passed
    assert "FAIL" in capsys.readouterr().out


def test_maxpool_overwrite_bug_is_caught_by_an_overlap():
    """The overwrite bug only shows where one pixel wins two windows: the cases must have one."""
    x = np.random.default_rng(110).standard_normal((2, 3, 7, 7))      # the checker's first case
    out = sol.maxpool_forward(x, 3, 2)
    dout = np.ones_like(out)
    assert sol.maxpool_backward(dout, x, 3, 2).max() >= 2             # some pixel won twice


# ------------------------------------------------------------------ hints that fit the mistake
@pytest.fixture
def fresh_results(monkeypatch):
    """An empty session record, so that hint steps do not depend on earlier tests."""
    monkeypatch.setattr(report, "_results", [])


def _hints(result):
    return " | ".join(result.hints)


@pytest.mark.parametrize("wrong", [col2im_crop_off_by_one, col2im_swapped_offsets])
def test_col2im_indexing_bug_gets_the_indexing_hint(wrong):
    result = ex.check_col2im(wrong)
    assert not result.passed
    assert checkers.COL2IM_ADD_HINT not in result.hints, _hints(result)
    assert result.hints[0] == checkers.COL2IM_INDEX_HINT or "off by one" in result.hints[0]


def test_col2im_crop_off_by_one_is_named():
    result = ex.check_col2im(col2im_crop_off_by_one)
    assert "moved by 1 row(s) and 0 column(s): the crop is off by one" in result.hints[0]


def test_col2im_accumulation_bug_gets_the_add_hint():
    result = ex.check_col2im(col2im_overwrites)
    assert result.hints == [checkers.COL2IM_ADD_HINT], _hints(result)
    # the no-overlap case passed: "=" is right where windows do not overlap
    assert [r.ok for r in result.rows[:2]] == [True, True]
    assert not all(r.ok for r in result.rows[2:])


def test_no_overlap_case_really_has_no_overlap():
    N, C, H, W, kh, kw, s, p = checkers.NO_OVERLAP_CASE
    ones = np.ones((C * kh * kw, N * ((H + 2 * p - kh) // s + 1) * ((W + 2 * p - kw) // s + 1)))
    covered = sol.col2im(ones, (N, C, H, W), kh, kw, s, p)   # how many windows cover each pixel
    assert covered.max() == 1 and covered.min() == 0          # none twice, some never (gaps)


CONV_FORMULA = "dW = dy @ cols.T"


def test_conv_backward_blames_the_learners_broken_col2im():
    conv_backward = with_helpers(sol.conv_backward, col2im=col2im_overwrites)
    result = ex.check_conv_backward(conv_backward)
    assert not result.passed
    assert "calls your col2im from exercise 3.2" in result.hints[0], _hints(result)
    assert not any(CONV_FORMULA in h for h in result.hints)
    assert not any("your im2col" in h for h in result.hints)    # im2col is the reference one


def test_conv_forward_blames_the_learners_broken_im2col():
    conv_forward = with_helpers(sol.conv_forward, im2col=im2col_kernel_first)
    result = ex.check_conv_forward(conv_forward)
    assert not result.passed
    assert "calls your im2col from exercise 3.1" in result.hints[0], _hints(result)


def test_conv_backward_with_right_helpers_keeps_the_formula_hint():
    own = with_helpers(conv_backward_db_one_position, im2col=sol.im2col, col2im=sol.col2im)
    result = ex.check_conv_backward(own)
    assert not result.passed and any(CONV_FORMULA in h for h in result.hints)
    assert not any("calls your" in h for h in result.hints)
    assert ex.check_conv_backward(with_helpers(sol.conv_backward, im2col=sol.im2col,
                                               col2im=sol.col2im)).passed


@pytest.mark.parametrize("wrong", [maxpool_backward_every_tie, maxpool_backward_last_tie])
def test_maxpool_tie_bugs_fail_with_the_tie_hint(wrong):
    result = ex.check_maxpool_backward(wrong)
    assert not result.passed
    assert all(r.ok for r in result.rows if "ties" not in r.label)     # right without ties
    assert result.hints == [checkers.MAXPOOL_TIE_HINT], _hints(result)


def test_maxpool_tie_convention_is_the_first_maximum():
    """By hand: a 2x2 window of equal values sends its gradient to its top-left pixel."""
    from tinyalexnet.layers import MaxPool2d
    x = np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [0.0, 2.0, 2.0]]]])   # 3x3, pool 2/1
    dout = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    # window (0,0): four 1s -> (0,0); (0,1): 1,0,1,2 -> (1,2); (1,0): 1,1,0,2 -> (2,1);
    # (1,1): 1,2,2,2 -> (1,2) (first of three 2s)
    want = np.array([[[[1.0, 0.0, 0.0], [0.0, 0.0, 1010.0], [0.0, 100.0, 0.0]]]])
    layer = MaxPool2d(2, 1)
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(dout), want)
    np.testing.assert_array_equal(sol.maxpool_backward(dout, x, 2, 1), want)


def test_maxpool_tie_cases_have_ties():
    for n, (shape, k, s) in enumerate(checkers.POOL_CASES):
        x = checkers._tied(shape, 125 + n, "numpy")
        out = sol.maxpool_forward(x, k, s)
        OH, OW = out.shape[2:]
        winners = sum((x[:, :, i:i + s * OH:s, j:j + s * OW:s] == out).astype(int)
                      for i in range(k) for j in range(k))
        assert (winners > 1).mean() > 0.3, (n, (winners > 1).mean())   # many tied windows


def test_lrn_hints_lead_then_tell(fresh_results):
    formula = checkers.LRN_HINTS[1]
    first = ex.check_lrn_backward(lrn_backward_first_term_only)
    assert not first.passed
    assert first.hints == [checkers.LRN_FIRST_TERM_HINT + " " + checkers.LRN_MORE]
    assert "2 alpha beta" not in _hints(first)                   # no formula yet
    second = ex.check_lrn_backward(lrn_backward_first_term_only)
    assert second.hints == [formula]
    assert ex.check_lrn_backward(sol.lrn_backward).passed        # a pass starts over
    other = ex.check_lrn_backward(lrn_backward_sign_flipped)
    assert other.hints == [checkers.LRN_HINTS[0] + " " + checkers.LRN_MORE]


def test_topk_tie_bug_fails_with_the_tie_hint():
    result = ex.check_topk_accuracy(topk_ties_count_for)
    assert not result.passed
    assert all(r.ok for r in result.rows if "distinct" in r.label)
    assert "a tie counts against the prediction" in result.hints[0]


@pytest.mark.parametrize("scores, label, k, want", [
    ([0.4, 0.4, 0.4], 0, 1, 0.0), ([0.4, 0.4, 0.4], 0, 3, 1.0), ([1.0, 2.0, 2.0], 1, 1, 0.0),
    ([1.0, 2.0, 2.0], 1, 2, 1.0), ([1.0, 2.0, 2.0], 0, 2, 0.0), ([3.0, 2.0, 2.0], 0, 1, 1.0)])
def test_topk_solution_counts_ties_as_the_trainer(scores, label, k, want):
    """By hand: a label is in the top k when at most k scores are at least as high as its own."""
    from tinyalexnet.metrics import topk_correct
    logits, labels = np.array([scores]), np.array([label])
    assert sol.topk_accuracy(logits, labels, k) == want
    assert float(topk_correct(logits, labels, (k,))[0]) == want


# ------------------------------------------------------------------ the checker's own behaviour
def _not_done(*args):
    raise NotImplementedError("Exercise: write me")


def test_not_attempted_is_reported_not_raised(capsys):
    result = ex.check_relu_backward(_not_done)
    assert not result.passed and not result.attempted
    assert "not attempted yet" in capsys.readouterr().out


def test_crashing_code_is_reported(capsys):
    def crashes(dout, x):
        return dout @ x                  # shapes (3, 4, 5) @ (3, 4, 5): ValueError
    result = ex.check_relu_backward(crashes)
    assert not result.passed and "your code raised ValueError" in result.problem
    assert "FAIL" in capsys.readouterr().out


def test_wrong_shape_is_named(capsys):
    result = ex.check_linear_forward(lambda x, W, b: (x @ W.T + b).T)
    assert not result.passed and "expected shape (4, 3), got (3, 4)" in result.problem


def test_strict_mode_raises_on_failure_and_not_attempted():
    ex.set_strict(True)
    with pytest.raises(ex.ExerciseFailed, match="4.2 .*failed"):
        ex.check_relu_backward(lambda dout, x: dout)
    with pytest.raises(ex.ExerciseFailed, match="not attempted"):
        ex.check_relu_backward(_not_done)
    assert ex.check_relu_backward(sol.relu_backward).passed        # passing does not raise


def test_results_are_recorded():
    before = len(ex.results())
    ex.check_relu_forward(sol.relu_forward)
    ex.check_relu_forward(_not_done)
    new = ex.results()[before:]
    assert [(r.number, r.passed, r.attempted) for r in new] == [("4.1", True, True),
                                                                ("4.1", False, False)]
    assert '"exercise": "4.1"' in ex.results_json()


# ------------------------------------------------------------------ the Tanh layer
def test_tanh_gradient_check(xp):
    """float64, central differences: tanh is smooth, bound 1e-7."""
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 4, 5)) * 2)
    result = check_layer(Tanh(), x, bound=1e-7)
    assert result.passed, str(result)


def test_tanh_forward_and_errors(xp):
    x = xp.asarray(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4))
    layer = Tanh()
    assert float(abs(layer.forward(x) - xp.tanh(x)).max()) == 0.0
    with pytest.raises(StateError, match="Tanh: backward"):
        Tanh().backward(x)


# ------------------------------------------------------------------ notebook tools
nbformat = pytest.importorskip("nbformat")


def _notebook():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    stub = new_code_cell("def relu_backward(dout, x):\n    raise NotImplementedError")
    stub.metadata["tags"] = ["exercise"]
    stub.metadata["tinyalexnet"] = {"exercise": "4.2", "solution": ["relu_backward"]}
    check = new_code_cell("check_relu_backward(relu_backward)")
    check.outputs = [nbformat.v4.new_output("stream", text="PASS\n")]
    check.execution_count = 3
    return new_notebook(cells=[new_markdown_cell("# title"), stub, check])


def test_fill_solutions_replaces_only_exercise_cells():
    nb = _notebook()
    solved = fill_solutions(nb)
    assert exercise_cells(nb) == [(1, "4.2", ["relu_backward"])]
    assert "return dout * (x > 0)" in solved.cells[1].source
    assert "NotImplementedError" in nb.cells[1].source            # the original is untouched
    assert solved.cells[2].source == nb.cells[2].source
    namespace = {"get_array_module": backend.get_array_module}
    exec(solved.cells[1].source, namespace)                        # the pasted source runs
    assert namespace["relu_backward"](np.ones(2), np.array([-1.0, 1.0])).tolist() == [0.0, 1.0]


LESSONS_WITH_EXERCISES = [
    p for p in sorted((Path(__file__).resolve().parent.parent / "lessons").glob("*.ipynb"))
    if exercise_cells(nbformat.read(p, as_version=4))]


def test_there_are_lessons_with_exercises():
    assert len(LESSONS_WITH_EXERCISES) >= 9


@pytest.mark.parametrize("path", LESSONS_WITH_EXERCISES, ids=lambda p: p.stem[:2])
def test_pasted_solutions_stand_alone_in_their_lesson(path, capsys):
    """Each solution's source, pasted where the lesson tests paste it, runs with nothing but
    get_array_module and the lesson's earlier exercise cells (im2col before conv_forward,
    maxpool_forward before its backward), and its checker passes.  The layers' functions
    (functional.py) are these solutions, so they must never call a helper a lesson lacks."""
    nb = nbformat.read(path, as_version=4)
    namespace = {"get_array_module": backend.get_array_module}
    names = []
    for _, _, cell_names in exercise_cells(nb):
        exec(solution_source(cell_names), namespace)
        names += cell_names
    for name in names:
        result = getattr(ex, "check_" + name)(namespace[name])
        assert result.passed, result.report()


def test_the_pasted_source_says_where_it_lives():
    assert solution_source(["conv_forward"]).startswith(
        "# Reference solution (tinyalexnet/layers/functional.py)\n")
    assert solution_source(["im2col", "sgd_step"]).startswith(
        "# Reference solution (tinyalexnet/layers/im2col.py, tinyalexnet/exercises/solutions.py)")


def test_unknown_solution_is_an_error():
    with pytest.raises(KeyError, match="no reference solution named nonsense"):
        solution_source(["nonsense"])


def test_strip_outputs():
    nb = _notebook()
    assert has_outputs(nb)
    assert not has_outputs(strip_outputs(nb))


def test_command_line_solve_and_strip(tmp_path):
    from tinyalexnet.exercises.__main__ import main
    path, out = tmp_path / "lesson.ipynb", tmp_path / "solved.ipynb"
    nbformat.write(_notebook(), path)
    assert main(["solve", str(path), str(out)]) == 0
    assert "return dout * (x > 0)" in nbformat.read(out, as_version=4).cells[1].source
    assert main(["strip", str(path)]) == 0
    assert not has_outputs(nbformat.read(path, as_version=4))


# ------------------------------------------------------------------ expect: a lesson's claims
def test_expect_is_silent_when_the_claim_holds(capsys):
    assert ex.expect(0.4 < 0.45 < 0.5, "the loss lies between 0.4 and 0.5") is None
    assert capsys.readouterr().out == ""


def test_expect_notes_a_failed_claim_for_the_learner(capsys):
    ex.expect(False, "the loss lies between 0.4 and 0.5")
    out = capsys.readouterr().out
    assert out.startswith("NOTE: the text says: the loss lies between 0.4 and 0.5")
    assert "this run does not show it" in out


def test_expect_fails_the_lesson_in_strict_mode():
    ex.set_strict(True)
    with pytest.raises(ex.ClaimFailed, match="the text says: ReLU reaches 25% first"):
        ex.expect(False, "ReLU reaches 25% first")
    ex.expect(True, "this holds")                                  # a claim that holds: nothing


# ---------------------------------------------------------------- lesson 14: the towers' exchange
def gather_backward_kept_own(dy, rank, swap):
    half = dy.shape[1] // 2
    swap(dy[:, (1 - rank) * half:(2 - rank) * half])          # sent, but nothing added
    return dy[:, rank * half:(rank + 1) * half]


def gather_backward_sent_mine(dy, rank, swap):
    half = dy.shape[1] // 2
    mine = dy[:, rank * half:(rank + 1) * half]
    return mine + swap(mine)


def gather_backward_halves(dy, rank, swap):
    half = dy.shape[1] // 2
    theirs = dy[:, (1 - rank) * half:(2 - rank) * half]
    return theirs + swap(dy[:, rank * half:(rank + 1) * half])


def gather_backward_averaged(dy, rank, swap):
    return sol.gather_backward(dy, rank, swap) / 2


def gather_backward_one_tower_swaps(dy, rank, swap):
    half = dy.shape[1] // 2
    got = swap(dy[:, half:]) if rank == 0 else 0
    return dy[:, rank * half:(rank + 1) * half] + got


def test_gather_backward_solution_passes_and_is_checked_on_both_towers(capsys):
    result = ex.check_gather_backward(sol.gather_backward)
    assert result.passed, result.report()
    labels = [r.label for r in result.rows]
    assert sum("numerical gradient" in lab for lab in labels) == 4           # 2 shapes x 2 towers
    assert sum("model_parallel.Gather" in lab for lab in labels) == 4


@pytest.mark.parametrize("wrong, hint", [
    (gather_backward_kept_own, "kept only the gradient your own tower"),
    (gather_backward_sent_mine, "you sent your own columns"),
    (gather_backward_halves, "tower 0 holds the first"),
    (gather_backward_averaged, "do not average"),
])
def test_wrong_gather_backward_fails_with_the_hint_that_names_it(wrong, hint, capsys,
                                                                fresh_results):
    result = ex.check_gather_backward(wrong)
    assert not result.passed and result.attempted
    assert "FAIL" in capsys.readouterr().out
    assert hint in result.hints[0], _hints(result)


def test_gather_backward_that_swaps_on_one_tower_only_is_named(capsys, fresh_results):
    result = ex.check_gather_backward(gather_backward_one_tower_swaps)
    assert not result.passed
    assert "tower 0 called swap 1 times, tower 1 0 times" in result.problem


def test_gather_backward_not_attempted(capsys, fresh_results):
    def stub(dy, rank, swap):
        raise NotImplementedError
    result = ex.check_gather_backward(stub)
    assert not result.attempted and "not attempted" in capsys.readouterr().out
