"""The checkers: one call per exercise, e.g. ``check_linear_backward(linear_backward)``.

Every checker draws small random float64 inputs (a fixed seed, odd sizes so
that a swapped axis shows), calls the learner's function and compares:

* a backward pass with the **numerical gradient** (central differences, h = 1e-6)
  of the package's forward pass, bound 1e-6 (a correct backward gives ~1e-9);
* every result with the **reference layer** of the package, bound 1e-8 (the same
  maths in float64 agrees to ~1e-15, whatever the order of the operations).

It prints one row per comparison, PASS or FAIL, and a hint on failure (see
``report.py``).  ``backend="cupy"`` runs the same check on the GPU.
"""
from .. import backend as B
from .. import rng as counter_rng
from ..backend import numpy as np
from ..gradcheck import numerical_gradient, rel_error
from ..layers import (Conv2d, Dropout, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                      SoftmaxCrossEntropy)
from ..layers.im2col import col2im as ref_col2im, im2col as ref_im2col
from ..layers.naive import conv2d_naive
from ..layers.tanh import Tanh
from ..optim import SGD, Adam
from ..transforms import crop as ref_crop
from .report import Exercise, earlier_failures

GRAD_BOUND = 1e-6   # learner's backward vs central differences, float64
REF_BOUND = 1e-8    # learner's result vs the package's layer, float64


def _rand(shape, seed, low=None, backend="numpy"):
    """Standard-normal float64 values; with ``low``, every |value| >= low (no kinks, no ties)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    if low is not None:
        x = np.sign(x) * (low + np.abs(x))
    return B.to_backend(x, backend)


def _layer(layer, backend, params=None):
    """The layer in float64 on ``backend``, with ``params`` copied in."""
    layer.to(backend, "float64")
    if params:
        layer.load_state_dict(params)
    return layer


def _numeric(forward, x, dout):
    """d sum(forward(x) * dout) / dx by central differences."""
    return numerical_gradient(lambda: (forward(x) * dout).sum(), x)


# ---------------------------------------------------------------- lesson 1
TO_NCHW_VIEW_HINT = ("the values are right, but your result is a view of the input: transpose "
                     "copies nothing, it only reorders the strides, so one channel of one image "
                     "is scattered through memory.  The exercise asks for a contiguous array: "
                     "xp.ascontiguousarray(images.transpose(0, 3, 1, 2)).")


def check_to_nchw(to_nchw, backend="numpy"):
    """Exercise 1.1: (N, H, W, C) -> (N, C, H, W), as a contiguous array (not a strided view)."""
    ex = Exercise("1.1", "to_nchw", hint="NCHW puts channels on axis 1: transpose the axes "
                  "(0, 3, 1, 2) of (N, H, W, C); check the shape of your result first.")
    images = B.to_backend(np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8),
                          backend)
    with ex.attempt():
        got = to_nchw(images)
        if ex.compare("values vs transpose", got, images.transpose(0, 3, 1, 2), bound=0.0):
            if not ex.require("a contiguous array, not a view", got.flags.c_contiguous):
                ex.diagnose(TO_NCHW_VIEW_HINT)
    return ex.finish()


NORMALIZE_HINTS = {
    "ddof": "you divided by the sample standard deviation (ddof=1, dividing by M - 1).  The "
            "exercise asks for the population one over all M = N*H*W values of a channel, "
            "NumPy's default x.std(axis=(0, 2, 3), keepdims=True) (ddof=0): it is what makes "
            "every channel's standard deviation exactly 1 afterwards, and what batch "
            "normalisation and transforms.normalize use.",
    "whole": "you normalised the whole array at once: each CHANNEL needs its own mean and std. "
             "Reduce over axes (0, 2, 3) only (all images and pixels), with keepdims=True.",
    "image": "you normalised each image separately: the statistics of a channel are taken over "
             "ALL images and pixels, axes (0, 2, 3), not (2, 3).",
    "no_std": "the means are right, but each channel must also be divided by its standard "
              "deviation.",
    "keepdims": "without keepdims=True the mean over axes (0, 2, 3) has shape (C,), which "
                "broadcasting lines up with the LAST axis, W: reduce with keepdims=True, so that "
                "the (1, C, 1, 1) mean and std broadcast against (N, C, H, W).",
}
NORMALIZE_BOUND = 1e-5      # lets an eps <= 1e-5 added to the std pass (the stds here are 1..100)


def check_normalize_channels(normalize_channels, backend="numpy"):
    """Exercise 1.2: per-channel mean 0, std 1 over (N, H, W).

    The standard deviation asked for is the population one (ddof=0), as batch
    normalisation and ``transforms.normalize`` use.  A small eps added to it (or to the
    variance), to guard against a constant channel, is not a mistake: the bound lets
    any eps up to 1e-5 pass.  A failure is matched against the usual mistakes (ddof=1,
    the wrong axes, no division) and the hint names the one found.
    """
    ex = Exercise("1.2", "normalize_channels", hint=NORMALIZE_HINTS["keepdims"])
    xp = B.get_backend(backend)
    scale = xp.asarray(np.array([1.0, 10.0, 100.0]).reshape(1, 3, 1, 1))
    x = _rand((4, 3, 5, 6), 2, backend=backend) * scale + 3 * scale
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    want = (x - mean) / x.std(axis=(0, 2, 3), keepdims=True)
    crashed = None
    with ex.attempt():
        try:
            got = normalize_channels(x.copy())
        except ValueError as err:        # a broadcasting error: shapes that do not line up
            crashed = err
            raise
        ex.compare("values vs reference (eps up to 1e-5 allowed)", got, want,
                   bound=NORMALIZE_BOUND)
    if ex.result.attempted and not ex.result.passed:
        if crashed is not None:
            if "broadcast" in str(crashed):
                ex.diagnose(NORMALIZE_HINTS["keepdims"])
        elif not ex.result.problem:
            mistakes = {
                "ddof": (x - mean) / x.std(axis=(0, 2, 3), keepdims=True, ddof=1),
                "whole": (x - x.mean()) / x.std(),
                "image": (x - x.mean(axis=(2, 3), keepdims=True))
                / x.std(axis=(2, 3), keepdims=True),
                "no_std": x - mean,
            }
            for name, wrong in mistakes.items():
                if rel_error(got, wrong) <= NORMALIZE_BOUND:
                    ex.diagnose(NORMALIZE_HINTS[name])
                    break
    return ex.finish()


# ---------------------------------------------------------------- lesson 2
def _linear(backend):
    x = _rand((4, 5), 10, backend=backend)
    layer = _layer(Linear(5, 3, rng=3), backend)
    layer.params["bias"][...] = _rand((3,), 11, backend=backend)
    return x, layer


def check_linear_forward(linear_forward, backend="numpy"):
    """Exercise 2.1: y = x W^T + b."""
    ex = Exercise("2.1", "linear_forward", hint="W has shape (out, in) as in PyTorch: "
                  "y = x @ W.T + b, and b broadcasts over the batch.")
    x, layer = _linear(backend)
    with ex.attempt():
        got = linear_forward(x, layer.params["weight"], layer.params["bias"])
        ex.compare("out vs Linear.forward", got, layer.forward(x))
    return ex.finish()


def check_linear_backward(linear_backward, backend="numpy"):
    """Exercise 2.2: dx, dW, db of the fully connected layer."""
    ex = Exercise("2.2", "linear_backward", hint="each gradient has the shape of what it is "
                  "the gradient of: dx = dout @ W (N, D), dW = dout.T @ x (M, D), db = dout summed "
                  "over the batch (M,).")
    x, layer = _linear(backend)
    W, b = layer.params["weight"], layer.params["bias"]
    dout = _rand((4, 3), 12, backend=backend)
    layer.forward(x)
    ref_dx = layer.backward(dout)
    numeric = {"dx": _numeric(layer.forward, x, dout),
               "dW": _numeric(lambda _: layer.forward(x), W, dout),
               "db": _numeric(lambda _: layer.forward(x), b, dout)}
    reference = {"dx": ref_dx, "dW": layer.grads["weight"], "db": layer.grads["bias"]}
    with ex.attempt():
        got = linear_backward(dout, x.copy(), W.copy())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            ex.result.problem = "linear_backward must return three arrays: (dx, dW, db)"
            return ex.finish()
        for name, g in zip(("dx", "dW", "db"), got):
            ex.compare(f"{name} vs numerical gradient", g, numeric[name], GRAD_BOUND)
            ex.compare(f"{name} vs Linear.backward", g, reference[name])
    return ex.finish()


SOFTMAX_SHIFT_HINT = ("with logits in the thousands exp() overflows to inf and inf / inf is "
                      "NaN: subtract each row's maximum before exp().  The probabilities do not "
                      "change, and exp() can no longer overflow.")
SOFTMAX_LOG_HINT = ("your gradient survives logits in the thousands, so your softmax is shifted "
                    "and stable; but the loss is not: a probability far below 1e-308 underflows "
                    "to 0, and -log(0) is inf.  Do not take the log of p: compute log p itself, "
                    "log p = (z - max) - log(sum(exp(z - max))) (log-sum-exp), whose terms "
                    "stay finite.")


def check_softmax_cross_entropy(softmax_cross_entropy, backend="numpy"):
    """Exercise 2.3: the loss and d loss / d logits, stable for large logits.

    The last two rows feed logits in the thousands.  Two different mistakes fail
    there: an unshifted exp() (everything NaN) and a shifted softmax followed by
    -log(p) (the gradient right, the loss inf where a probability underflowed);
    the hint says which.
    """
    ex = Exercise("2.3", "softmax_cross_entropy")
    xp = B.get_backend(backend)
    logits = _rand((5, 7), 20, backend=backend) * 3
    labels = xp.asarray(np.array([0, 6, 3, 3, 1]))
    ref = SoftmaxCrossEntropy()
    ref_loss = ref.forward(logits, labels)
    ref_grad = ref.backward()
    numeric = numerical_gradient(lambda: ref.forward(logits, labels), logits)
    mean_hint = ("dlogits = (softmax(logits) - onehot(labels)) / N: the loss is a mean over the "
                 "batch, so is its gradient.")
    big_rows = []
    with ex.attempt():
        loss, dlogits = softmax_cross_entropy(logits.copy(), labels)
        ex.compare("loss vs SoftmaxCrossEntropy", xp.asarray(loss), ref_loss,
                   hint="the loss is -log p[n, label[n]], averaged over the N samples.")
        ex.compare("dlogits vs numerical gradient", dlogits, numeric, GRAD_BOUND, hint=mean_hint)
        ex.compare("dlogits vs reference", dlogits, ref_grad, hint=mean_hint)
        big = logits * 1000      # exp(3000) overflows: only a shifted softmax survives this
        with np.errstate(all="ignore"):
            loss, dlogits = softmax_cross_entropy(big.copy(), labels)
        big_rows.append(ex.compare("loss, logits x1000", xp.asarray(loss),
                                   ref.forward(big, labels)))
        big_rows.append(ex.compare("dlogits, logits x1000", dlogits, ref.backward()))
    small_ok = all(r.ok for r in ex.result.rows[:3]) and len(ex.result.rows) == 5
    if small_ok and not all(big_rows):
        loss_ok, grad_ok = big_rows
        ex.diagnose(SOFTMAX_LOG_HINT if grad_ok and not loss_ok else SOFTMAX_SHIFT_HINT)
    return ex.finish()


# ---------------------------------------------------------------- lesson 3
# (N, C, H, W, kh, kw, stride, padding): non-square, odd sizes, overlapping windows
CONV_CASES = [(2, 3, 7, 6, 3, 3, 1, 0), (1, 2, 8, 9, 3, 2, 2, 1), (2, 2, 9, 7, 5, 5, 2, 2)]


def check_im2col(im2col, backend="numpy"):
    """Exercise 3.1: windows to columns, rows (c, i, j), columns (n, oh, ow)."""
    ex = Exercise("3.1", "im2col", hint="cols has shape (C*kh*kw, N*OH*OW); for kernel offset "
                  "(i, j) the pixels all windows see form x_pad[:, :, i:i+s*OH:s, j:j+s*OW:s]; "
                  "rows run over (c, i, j), columns over (n, oh, ow).")
    with ex.attempt():
        for k, (N, C, H, W, kh, kw, s, p) in enumerate(CONV_CASES):
            x = _rand((N, C, H, W), 30 + k, backend=backend)
            ex.compare(f"{kh}x{kw} stride {s} pad {p}", im2col(x, kh, kw, s, p),
                       ref_im2col(x, kh, kw, s, p))
    return ex.finish()


# Windows that do not overlap (stride >= kernel, with padding and a gap): every pixel is
# in at most one column, so "=" and "+=" agree there, and a wrong result is an indexing bug.
NO_OVERLAP_CASE = (2, 3, 7, 5, 3, 2, 3, 1)

COL2IM_ADD_HINT = ("where windows overlap, a pixel was copied into several columns, so its "
                   "gradient is the SUM of those entries: use += into the slice, not =.")
COL2IM_INDEX_HINT = ("even where no windows overlap your result is wrong, so this is not about "
                     "+=: it is where the values land.  Row (c, i, j) of cols belongs to kernel "
                     "offset (i, j): cols.reshape(C, kh, kw, N, OH, OW)[:, i, j] goes into "
                     "dx_pad[:, :, i:i+s*OH:s, j:j+s*OW:s] (i moves down the rows, j along "
                     "the columns), transposed from (C, N, ...) to (N, C, ...); then crop "
                     "dx_pad[:, :, padding:padding+H, padding:padding+W].")


def _col2im_shift(got, dcols, x_shape, kh, kw, s, p):
    """The (rows, columns) by which ``got`` is the right result shifted (a crop off by one)."""
    N, C, H, W = x_shape
    # dx_pad, before the crop: the same windows on the padded shape with padding 0
    padded = ref_col2im(dcols, (N, C, H + 2 * p, W + 2 * p), kh, kw, s, 0)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            top, left = p + di, p + dj
            if (di or dj) and 0 <= top and 0 <= left and top + H <= H + 2 * p \
                    and left + W <= W + 2 * p \
                    and rel_error(got, padded[:, :, top:top + H, left:left + W]) < REF_BOUND:
                return di, dj
    return None


def check_col2im(col2im, backend="numpy"):
    """Exercise 3.2: the adjoint of im2col, i.e. its backward pass.

    The first case has windows that do not overlap: there a plain "=" would be right,
    so a failure there is an indexing bug (a crop off by one, swapped kernel offsets),
    and a failure only where windows overlap is an accumulation bug.  The hint says which.
    """
    ex = Exercise("3.2", "col2im", hint=COL2IM_ADD_HINT)
    failed = {}          # case tag -> overlapping?
    with ex.attempt():
        for k, case in enumerate([NO_OVERLAP_CASE] + CONV_CASES):
            N, C, H, W, kh, kw, s, p = case
            x = _rand((N, C, H, W), 40 + k, backend=backend)
            dcols = _rand(ref_im2col(x, kh, kw, s, p).shape, 50 + k, backend=backend)
            overlap = kh > s or kw > s
            tag = f"{kh}x{kw} s{s} p{p}" + ("" if overlap else " (no overlap)")
            got = col2im(dcols, x.shape, kh, kw, s, p)
            numeric = _numeric(lambda a: ref_im2col(a, kh, kw, s, p), x, dcols)
            ok = ex.compare(f"{tag} vs numerical gradient", got, numeric, GRAD_BOUND)
            ok &= ex.compare(f"{tag} vs reference col2im", got,
                             ref_col2im(dcols, x.shape, kh, kw, s, p))
            if not ok:
                failed[tag] = overlap
                shift = None if overlap or not p else _col2im_shift(got, dcols, x.shape,
                                                                    kh, kw, s, p)
                if shift:
                    ex.diagnose(f"your result is the right gradient moved by {shift[0]} "
                                f"row(s) and {shift[1]} column(s): the crop is off by one. "
                                "Keep dx_pad[:, :, padding:padding+H, padding:padding+W].")
    if ex.result.attempted and not ex.result.passed and not ex.diagnoses:
        if ex.result.problem or not all(failed.values()):
            ex.diagnose(COL2IM_INDEX_HINT)     # wrong shape, a crash, or wrong without overlaps
        elif failed:
            ex.diagnose(COL2IM_ADD_HINT)       # right without overlaps, wrong with them
    return ex.finish()


def _conv(case, seed, backend):
    N, C, H, W, kh, kw, s, p = case
    x = _rand((N, C, H, W), seed, backend=backend)
    layer = _layer(Conv2d(C, 4, (kh, kw), stride=s, padding=p, rng=seed), backend)
    layer.params["bias"][...] = _rand((4,), seed + 1, backend=backend)
    return x, layer


# The learner's helpers from exercises 3.1 and 3.2, which their conv_forward and
# conv_backward may call: (exercise, checker's name, how to call it on a case).
_HELPERS = {
    "im2col": ("3.1", "check_im2col",
               lambda f, x, kh, kw, s, p: (f(x, kh, kw, s, p), ref_im2col(x, kh, kw, s, p))),
    "col2im": ("3.2", "check_col2im",
               lambda f, x, kh, kw, s, p: (
                   f(ref_im2col(x, kh, kw, s, p), x.shape, kh, kw, s, p),
                   ref_col2im(ref_im2col(x, kh, kw, s, p), x.shape, kh, kw, s, p))),
}


def _broken_helpers(function, backend):
    """The learner's own im2col/col2im that ``function`` calls and that give wrong results.

    A function defined in a notebook looks its helpers up by name in the notebook's
    namespace (``function.__globals__``), so the ones it really calls are found there.
    Returns ``[(name, exercise, what is wrong)]``; helpers that are right are left out.
    """
    broken = []
    names = getattr(getattr(function, "__code__", None), "co_names", ())
    namespace = getattr(function, "__globals__", {})
    for name, (number, checker, call) in _HELPERS.items():
        helper = namespace.get(name) if name in names else None
        if not callable(helper) or helper in (ref_im2col, ref_col2im):
            continue
        try:
            for k, (N, C, H, W, kh, kw, s, p) in enumerate([NO_OVERLAP_CASE] + CONV_CASES):
                x = _rand((N, C, H, W), 190 + k, backend=backend)
                got, want = call(helper, x, kh, kw, s, p)
                if tuple(got.shape) != tuple(want.shape) or rel_error(got, want) > REF_BOUND:
                    broken.append((name, number, f"wrong on {kh}x{kw} stride {s} pad {p}; "
                                   f"{checker}({name}) shows where"))
                    break
        except NotImplementedError:
            broken.append((name, number, "not written yet"))
        except Exception as err:  # the helper crashed
            broken.append((name, number, f"raises {type(err).__name__}: {err}"))
    return broken


def _blame_helpers(ex, function, backend):
    """When a conv check failed because of the learner's im2col/col2im, say so."""
    if ex.result.passed or not ex.result.attempted:
        return
    for name, number, what in _broken_helpers(function, backend):
        ex.diagnose(f"{ex.result.name} calls your {name} from exercise {number}, and that "
                    f"{name} is {what}.  Fix {name} first, run its cell again, then this "
                    "check: the formula here may well be right.")


def check_conv_forward(conv_forward, backend="numpy"):
    """Exercise 3.3: convolution as im2col and one matrix product.

    If it fails and ``conv_forward`` calls the learner's own ``im2col`` (exercise 3.1),
    which is wrong, the report says so instead of repeating the formula.
    """
    ex = Exercise("3.3", "conv_forward", hint="W.reshape(F, -1) @ im2col(x) gives (F, N*OH*OW); "
                  "add the bias per output channel, then reshape to (F, N, OH, OW) and move N to "
                  "the front.")
    with ex.attempt():
        for k, case in enumerate(CONV_CASES):
            x, layer = _conv(case, 60 + k, backend)
            W, b = layer.params["weight"], layer.params["bias"]
            s, p = case[6], case[7]
            got = conv_forward(x, W, b, s, p)
            ex.compare(f"case {k} vs conv2d_naive", got,
                       B.to_backend(conv2d_naive(x, W, b, s, p), backend))
    _blame_helpers(ex, conv_forward, backend)
    return ex.finish()


def check_conv_backward(conv_backward, backend="numpy"):
    """Exercise 3.4: dx, dW, db of the convolution.

    If it fails and ``conv_backward`` calls the learner's own ``im2col`` or ``col2im``
    (exercises 3.1, 3.2), which is wrong, the report says so instead of the formula.
    """
    ex = Exercise("3.4", "conv_backward", hint="with dy = dout as (F, N*OH*OW) and "
                  "cols = im2col(x): "
                  "dW = dy @ cols.T, db = dout summed over (N, OH, OW), dx = col2im(W^T @ dy).")
    with ex.attempt():
        for k, case in enumerate(CONV_CASES[:2]):
            x, layer = _conv(case, 70 + k, backend)
            W, b = layer.params["weight"], layer.params["bias"]
            s, p = case[6], case[7]
            out = layer.forward(x)
            dout = _rand(out.shape, 80 + k, backend=backend)
            ref_dx = layer.backward(dout)
            got = conv_backward(dout, x.copy(), W.copy(), s, p)
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                ex.result.problem = "conv_backward must return three arrays: (dx, dW, db)"
                return ex.finish()
            numeric = {"dx": _numeric(layer.forward, x, dout),
                       "dW": _numeric(lambda _: layer.forward(x), W, dout),
                       "db": _numeric(lambda _: layer.forward(x), b, dout)}
            reference = {"dx": ref_dx, "dW": layer.grads["weight"], "db": layer.grads["bias"]}
            for name, g in zip(("dx", "dW", "db"), got):
                ex.compare(f"case {k} {name} vs numerical", g, numeric[name], GRAD_BOUND)
                ex.compare(f"case {k} {name} vs Conv2d", g, reference[name])
    _blame_helpers(ex, conv_backward, backend)
    return ex.finish()


# ---------------------------------------------------------------- lesson 4
def check_relu_forward(relu_forward, backend="numpy"):
    """Exercise 4.1: max(0, x)."""
    ex = Exercise("4.1", "relu_forward", hint="xp.maximum(x, 0) keeps positives and zeroes "
                  "negatives, element by element, without changing the shape.")
    x = _rand((3, 4, 5), 90, low=0.01, backend=backend)
    with ex.attempt():
        ex.compare("out vs ReLU.forward", relu_forward(x), ReLU().forward(x))
    return ex.finish()


def check_relu_backward(relu_backward, backend="numpy"):
    """Exercise 4.2: dout where x > 0, else 0."""
    ex = Exercise("4.2", "relu_backward", hint="the slope of max(0, x) is 1 where x > 0 and 0 "
                  "elsewhere: multiply dout by the mask (x > 0).")
    # Values at least 0.01 away from the kink at 0, so that the numerical gradient
    # (steps of 1e-6) never straddles it.
    x = _rand((3, 4, 5), 91, low=0.01, backend=backend)
    dout = _rand(x.shape, 92, backend=backend)
    layer = ReLU()
    layer.forward(x)
    reference = layer.backward(dout)
    numeric = _numeric(layer.forward, x, dout)
    with ex.attempt():
        got = relu_backward(dout, x)
        ex.compare("dx vs numerical gradient", got, numeric, GRAD_BOUND)
        ex.compare("dx vs ReLU.backward", got, reference)
    return ex.finish()


def check_tanh_backward(tanh_backward, backend="numpy"):
    """Exercise 4.3: d tanh from the forward's output."""
    ex = Exercise("4.3", "tanh_backward", hint="d tanh(x)/dx = 1 - tanh(x)^2 and out IS tanh(x): "
                  "dx = dout * (1 - out**2).")
    x = _rand((3, 4, 5), 93, backend=backend) * 2
    dout = _rand(x.shape, 94, backend=backend)
    layer = Tanh()
    out = layer.forward(x)
    reference = layer.backward(dout)
    numeric = _numeric(layer.forward, x, dout)
    with ex.attempt():
        got = tanh_backward(dout, out.copy())
        ex.compare("dx vs numerical gradient", got, numeric, GRAD_BOUND)
        ex.compare("dx vs Tanh.backward", got, reference)
    return ex.finish()


# ---------------------------------------------------------------- lesson 5
POOL_CASES = [((2, 3, 7, 7), 3, 2), ((1, 2, 9, 8), 3, 2), ((2, 2, 8, 6), 2, 2)]


def check_maxpool_forward(maxpool_forward, backend="numpy"):
    """Exercise 5.1: overlapping max pooling."""
    ex = Exercise("5.1", "maxpool_forward", hint="OH = (H - k) // s + 1; window (oh, ow) covers "
                  "rows oh*s .. oh*s+k-1 and columns ow*s .. ow*s+k-1.")
    with ex.attempt():
        for n, (shape, k, s) in enumerate(POOL_CASES):
            x = _rand(shape, 100 + n, backend=backend)
            ex.compare(f"{k}x{k} stride {s} on {shape[2]}x{shape[3]}", maxpool_forward(x, k, s),
                       MaxPool2d(k, s).forward(x))
    return ex.finish()


MAXPOOL_TIE_HINT = ("on a tie (two equal maxima in one window) only ONE position may get the "
                    "window's dout: the first maximum in row-major window order (offsets (0, 0), "
                    "(0, 1), ... (1, 0), ...), PyTorch's convention, which MaxPool2d follows. "
                    "Keep a boolean array of the windows already served, and skip them at "
                    "later offsets.")


def _tied(shape, seed, backend):
    """Small whole numbers: most windows hold their maximum more than once."""
    x = np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64)
    return B.to_backend(x, backend)


def check_maxpool_backward(maxpool_backward, backend="numpy"):
    """Exercise 5.2: each dout goes to the position of its window's maximum.

    Random normal inputs (no ties) are gradient-checked; then inputs full of ties are
    compared with MaxPool2d.backward, which gives a tied window's gradient to its first
    maximum in row-major order, as PyTorch does.  (At a tie the derivative is not
    defined, so there is no numerical gradient to compare with; but every window's dout
    must still go to exactly one pixel, so dx must sum to what dout sums to.)
    """
    ex = Exercise("5.2", "maxpool_backward", hint="only the maximum of a window moved the output, "
                  "so it alone gets that window's dout; with overlapping windows (3x3, stride 2) a "
                  "pixel can win two windows: ADD the gradients (+=), do not overwrite.")
    distinct_ok = True
    with ex.attempt():
        for n, (shape, k, s) in enumerate(POOL_CASES):
            # Random normal values have no ties, so the maximum of every window is
            # unique and the numerical gradient is exact.
            x = _rand(shape, 110 + n, backend=backend)
            layer = MaxPool2d(k, s)
            out = layer.forward(x)
            dout = _rand(out.shape, 120 + n, backend=backend)
            reference = layer.backward(dout)
            numeric = _numeric(layer.forward, x, dout)
            got = maxpool_backward(dout, x.copy(), k, s)
            tag = f"{k}/{s} on {shape[2]}x{shape[3]}"
            distinct_ok &= ex.compare(f"{tag} vs numerical gradient", got, numeric, GRAD_BOUND)
            distinct_ok &= ex.compare(f"{tag} vs MaxPool2d.backward", got, reference)
        for n, (shape, k, s) in enumerate(POOL_CASES):
            x = _tied(shape, 125 + n, backend)
            layer = MaxPool2d(k, s)
            dout = _rand(layer.forward(x).shape, 128 + n, backend=backend)
            got = maxpool_backward(dout, x.copy(), k, s)
            ex.compare(f"{k}/{s} on {shape[2]}x{shape[3]}, ties, vs MaxPool2d.backward", got,
                       layer.backward(dout))
    if distinct_ok and not ex.result.passed and ex.result.attempted and not ex.result.problem:
        ex.diagnose(MAXPOOL_TIE_HINT)        # right without ties, wrong with them: only then
    return ex.finish()


# The paper's constants, and a stronger normalisation so that a backward pass
# missing the cross-channel term fails clearly.
LRN_CASES = [dict(size=5, alpha=1e-4, beta=0.75, k=2.0), dict(size=3, alpha=0.5, beta=0.75, k=1.0)]


def check_lrn_forward(lrn_forward, backend="numpy"):
    """Exercise 5.3: local response normalisation across channels."""
    ex = Exercise("5.3", "lrn_forward", hint="the sum runs over channels "
                  "c - size//2 .. c + size//2, "
                  "clipped at 0 and C-1 (pad the channel axis with zeros), and alpha is NOT "
                  "divided by size.")
    with ex.attempt():
        for n, params in enumerate(LRN_CASES):
            x = _rand((2, 7, 3, 4), 130 + n, backend=backend) * 4
            ex.compare(f"size {params['size']} alpha {params['alpha']}", lrn_forward(x, **params),
                       LocalResponseNorm(**params).forward(x))
    return ex.finish()


LRN_HINTS = [
    # 1: where to look
    "b[c] = a[c] / D[c]^beta, and a[j] appears in more than its own output: it is also inside "
    "the sums D[c] of its neighbours c (|c - j| <= size//2).  Differentiate b[c] with respect "
    "to a[j] for every such c, not only for c = j, and add up dout[c] times each.",
    # 2: the formula
    "dx[j] = dout[j] D[j]^-beta - 2 alpha beta a[j] * (sum over c with |c - j| <= size//2 of "
    "dout[c] b[c] / D[c]); the sum is the same sliding channel window as the forward pass, "
    "applied to dout * b / D.",
]
LRN_FIRST_TERM_HINT = ("you have the first term, dout[j] D[j]^-beta, and nothing else: a[j] "
                       "is also inside the denominators D[c] of its neighbours c, so their "
                       "outputs b[c] change with a[j] too.  What is d b[c] / d a[j] for c != j?")
LRN_MORE = "Still stuck after a change? Run this check again for the next hint."


def check_lrn_backward(lrn_backward, backend="numpy"):
    """Exercise 5.4: LRN's backward, with the term every neighbour contributes.

    The hints lead before they tell: the first failed check says where to look (and
    recognises a backward pass that has only the first term); a second failed check
    in the same session, with no pass in between, gives the formula.
    """
    ex = Exercise("5.4", "lrn_backward")
    first_term_only = True
    with ex.attempt():
        for n, params in enumerate(LRN_CASES):
            x = _rand((2, 7, 3, 4), 140 + n, backend=backend) * 4
            layer = LocalResponseNorm(**params)
            out = layer.forward(x)
            dout = _rand(out.shape, 150 + n, backend=backend)
            reference = layer.backward(dout)
            numeric = _numeric(layer.forward, x, dout)
            got = lrn_backward(dout, x.copy(), **params)
            tag = f"alpha {params['alpha']}"
            ex.compare(f"{tag} vs numerical gradient", got, numeric, GRAD_BOUND)
            ex.compare(f"{tag} vs LRN.backward", got, reference)
            # the learner's dx against the first term alone: dout * D^-beta = dout * out / x
            first_term_only &= rel_error(got, dout * out / x) <= REF_BOUND
    if ex.result.attempted and not ex.result.passed:
        if earlier_failures("5.4") >= 1:
            ex.diagnose(LRN_HINTS[1])
        elif first_term_only and not ex.result.problem:
            ex.diagnose(LRN_FIRST_TERM_HINT + " " + LRN_MORE)
        else:
            ex.diagnose(LRN_HINTS[0] + " " + LRN_MORE)
    return ex.finish()


# ---------------------------------------------------------------- lesson 6
def _dropout(backend, p=0.3, seed=7):
    """Input, the keep mask the package's Dropout will draw, and that layer."""
    xp = B.get_backend(backend)
    x = _rand((4, 6, 5), 160, backend=backend)
    layer = Dropout(p, seed=seed).to(backend, "float64")
    keep = counter_rng.uniform(xp, x.shape, seed, 0, dtype="float64") >= p
    return x, keep, p, layer


def check_dropout_forward(dropout_forward, backend="numpy"):
    """Exercise 6.1: inverted dropout's forward pass for a given mask."""
    ex = Exercise("6.1", "dropout_forward", hint="keep the surviving activations and scale them "
                  "by 1 / (1 - p), so that the expected value of every output equals its input.")
    x, keep, p, layer = _dropout(backend)
    with ex.attempt():
        ex.compare("out vs Dropout.forward", dropout_forward(x, keep, p), layer.forward(x))
    return ex.finish()


def check_dropout_backward(dropout_backward, backend="numpy"):
    """Exercise 6.2: the gradient flows only through the kept units, with the same scale."""
    ex = Exercise("6.2", "dropout_backward", hint="forward multiplied by keep / (1 - p), a "
                  "constant for this step: the backward pass multiplies dout by the same.")
    x, keep, p, layer = _dropout(backend)
    layer.forward(x)
    dout = _rand(x.shape, 161, backend=backend)
    reference = layer.backward(dout)

    def forward(a):                 # mask number 0 at every evaluation: the same mask
        layer.calls = 0
        return layer.forward(a)

    numeric = _numeric(forward, x, dout)
    with ex.attempt():
        got = dropout_backward(dout, keep, p)
        ex.compare("dx vs numerical gradient", got, numeric, GRAD_BOUND)
        ex.compare("dx vs Dropout.backward", got, reference)
    return ex.finish()


def check_sgd_step(sgd_step, backend="numpy"):
    """Exercise 6.3: the paper's momentum and weight-decay update, two steps."""
    ex = Exercise("6.3", "sgd_step", hint="v <- momentum*v - weight_decay*lr*w - lr*g, then "
                  "w <- w + v; note that the paper multiplies the weight decay by lr too. "
                  "Return (w, v).")
    layer = _layer(Linear(4, 3, rng=5), backend)
    opt = SGD(layer, lr=0.1, momentum=0.9, weight_decay=0.05)
    xp = B.get_backend(backend)
    w, v = layer.params["weight"].copy(), xp.zeros_like(layer.params["weight"])
    with ex.attempt():
        for step in range(2):
            g = _rand(w.shape, 170 + step, backend=backend)
            layer.grads["weight"][...] = g
            layer.grads["bias"][...] = 0
            opt.step()
            result = sgd_step(w, g, v, 0.1, 0.9, 0.05)
            if not isinstance(result, (tuple, list)) or len(result) != 2:
                ex.result.problem = "sgd_step must return two arrays: (new w, new v)"
                return ex.finish()
            w, v = result
            ex.compare(f"w after step {step + 1} vs optim.SGD", w, layer.params["weight"])
            ex.compare(f"v after step {step + 1} vs optim.SGD", v,
                       opt.state["velocity"]["weight"])
    return ex.finish()



def check_adam_step(adam_step, backend="numpy"):
    """Exercise 6.4: Adam's update with its bias correction, three steps, twice (the second
    time with a large eps and small gradients, where eps's place in the formula shows).
    The results of steps 1 and 3 are compared with ``optim.Adam``."""
    ex = Exercise("6.4", "adam_step", hint="t counts the steps from 1: divide m by 1 - beta1**t "
                  "and v by 1 - beta2**t before using them, take the square root of v_hat and "
                  "add eps after it; keep m and v themselves uncorrected for the next step. "
                  "Return (w, m, v).")
    xp = B.get_backend(backend)
    with ex.attempt():
        for case, (scale, eps) in enumerate(((1.0, 1e-8), (1e-3, 1e-3))):
            layer = _layer(Linear(4, 3, rng=6 + case), backend)
            opt = Adam(layer, lr=0.01, betas=(0.9, 0.999), eps=eps)
            w = layer.params["weight"].copy()
            m, v = xp.zeros_like(w), xp.zeros_like(w)
            for t in range(1, 4):
                g = _rand(w.shape, 180 + 10 * case + t, backend=backend) * scale
                layer.grads["weight"][...] = g
                layer.grads["bias"][...] = 0
                opt.step()
                result = adam_step(w, g, m, v, t, 0.01, 0.9, 0.999, eps)
                if not isinstance(result, (tuple, list)) or len(result) != 3:
                    ex.result.problem = "adam_step must return three arrays: (new w, new m, new v)"
                    return ex.finish()
                w, m, v = result
                if t == 2:
                    continue                  # steps 1 and 3 are reported
                label = f"eps {eps:g}, step {t}"
                ex.compare(f"w after {label} vs optim.Adam", w, layer.params["weight"])
                ex.compare(f"m after {label} vs optim.Adam", m, opt.state["m"]["weight"])
                ex.compare(f"v after {label} vs optim.Adam", v, opt.state["v"]["weight"])
    return ex.finish()

# ---------------------------------------------------------------- lesson 7
# (in, out, kernel, stride, padding, groups, input size): AlexNet's five convolutions
ALEXNET_CONVS = [(3, 96, 11, 4, 0, 1, 227), (96, 256, 5, 1, 2, 2, 27), (256, 384, 3, 1, 1, 1, 13),
                 (384, 384, 3, 1, 1, 2, 13), (384, 256, 3, 1, 1, 2, 13), (16, 8, 4, 3, 1, 4, 10)]


def _number(value):
    """An int as a 0-d array for ``compare``; anything else is passed on to be reported."""
    return np.asarray(float(value)) if isinstance(value, (int, float, np.integer)) else value


def check_conv_output_size(conv_output_size):
    """Exercise 7.1: (size + 2 padding - kernel) // stride + 1."""
    ex = Exercise("7.1", "conv_output_size", hint="count the positions: the kernel's first row "
                  "can start at 0, s, 2s, ... as long as it still fits in size + 2*padding.")
    with ex.attempt():
        for cin, cout, k, s, p, g, size in ALEXNET_CONVS:
            want = Conv2d(cin, cout, k, s, p, g, rng=0).output_shape((cin, size, size))[1]
            got = conv_output_size(size, k, s, p)
            ex.compare(f"{size} k{k} s{s} p{p} -> {want}", _number(got), _number(want), bound=0.0)
    return ex.finish()


def check_conv_num_parameters(conv_num_parameters):
    """Exercise 7.2: weights plus biases of a grouped convolution."""
    ex = Exercise("7.2", "conv_num_parameters", hint="each output channel sees in_channels/groups "
                  "input channels through a k x k kernel, and has one bias.")
    with ex.attempt():
        for cin, cout, k, s, p, g, size in ALEXNET_CONVS:
            want = Conv2d(cin, cout, k, s, p, g, rng=0).num_parameters()
            got = conv_num_parameters(cin, cout, k, g)
            ex.compare(f"{cin}->{cout} k{k} g{g}: {want:,}", _number(got), _number(want),
                       bound=0.0)
    return ex.finish()


# ---------------------------------------------------------------- lesson 8
HFLIP_IN_PLACE_HINT = ("your hflip changed the batch it was given: writing the mirrored "
                       "images into x (x[b] = ..., x[...] = ...) flips the caller's own "
                       "pictures, so the un-augmented batch the caller keeps, and every later "
                       "epoch, sees them mirrored.  Return a new array: xp.where(flip "
                       "reshaped to (B, 1, 1, 1), x[:, :, :, ::-1], x), or work on x.copy().")


def check_hflip(hflip, backend="numpy"):
    """Exercise 8.1: mirror the images a boolean array picks, into a new array."""
    ex = Exercise("8.1", "hflip", hint="x[:, :, :, ::-1] mirrors every image; xp.where(flip "
                  "reshaped to (B, 1, 1, 1), mirrored, x) picks per image.")
    xp = B.get_backend(backend)
    x = _rand((5, 2, 4, 7), 180, backend=backend)
    flip = np.array([True, False, True, True, False])
    want = ref_crop(x, np.zeros(5, np.int64), np.zeros(5, np.int64), (4, 7), flip)
    with ex.attempt():
        given = x.copy()
        ex.compare("vs transforms.crop with flips", hflip(given, xp.asarray(flip)), want,
                   bound=0.0)
        if not ex.require("the batch given left unchanged", bool((given == x).all())):
            ex.diagnose(HFLIP_IN_PLACE_HINT)
        none = np.zeros(5, bool)
        ex.compare("nothing flipped", hflip(x.copy(), xp.asarray(none)), x, bound=0.0)
    return ex.finish()


# ---------------------------------------------------------------- lesson 9
def check_topk_accuracy(topk_accuracy, backend="numpy"):
    """Exercise 9.1: the fraction of images whose true class is among the k highest scores.

    Counted exactly as the training loop's ``topk_correct``: ties count against the
    prediction.  So the check has tied scores too, down to the whole row tied.
    """
    from ..metrics import topk_correct    # the training loop's own count
    tie_hint = ("a tie counts against the prediction, as in the trainer's topk_correct: the "
                "true class is in the top k when at most k scores (its own included) are AT "
                "LEAST as high as its own, i.e. (logits >= true).sum(axis=1) <= k.  Scores "
                "[.4, .4, .4] with label 0 are not top-1 (accuracy 0) but are top-3.")
    ex = Exercise("9.1", "topk_accuracy", hint="per row, count the scores at least as high as "
                  "the true class's own (it counts itself): the class is in the top k when that "
                  "count is at most k; average that over the rows.")
    xp = B.get_backend(backend)
    distinct = _rand((97, 10), 91, backend=backend)                  # no ties
    tied = B.to_backend(np.random.default_rng(93).integers(0, 4, (97, 10)).astype(np.float64),
                        backend)                                     # many ties
    labels = xp.asarray(np.random.default_rng(92).integers(0, 10, 97))
    distinct_ok, counted = True, True
    with ex.attempt():
        for scores, what in ((distinct, "distinct scores"), (tied, "tied scores")):
            for k in (1, 2, 5, 10):
                want = np.asarray(float(B.as_numpy(topk_correct(scores, labels, (k,))[0])) / 97)
                got = _number(topk_accuracy(scores, labels, k))
                ok = ex.compare(f"top-{k}, 97 images, {what}", got, want, bound=1e-12)
                distinct_ok &= ok or what == "tied scores"
                counted &= B.is_array(got) and rel_error(got, want * 97) <= 1e-12
        # one confident, right answer and one wrong one: top-1 accuracy 1/2
        easy = xp.asarray(np.array([[0.0, 9.0, 1.0], [5.0, 1.0, 2.0]]))
        ex.compare("[[0, 9, 1], [5, 1, 2]], labels [1, 2]: top-1", _number(
            topk_accuracy(easy, xp.asarray(np.array([1, 2])), 1)), np.asarray(0.5), bound=1e-12)
        # a network that says the same for every class is never right at top-1
        flat, zero = xp.asarray(np.array([[0.4, 0.4, 0.4]])), xp.asarray(np.array([0]))
        for k, want in ((1, 0.0), (3, 1.0)):
            ex.compare(f"[[.4, .4, .4]], label 0: top-{k}", _number(topk_accuracy(flat, zero, k)),
                       np.asarray(want), bound=1e-12)
    if ex.result.attempted and not ex.result.passed and not ex.result.problem:
        if distinct_ok:
            ex.diagnose(tie_hint)              # right without ties, wrong with them
        elif counted:
            ex.diagnose("you return how many images have their class in the top k; the "
                        "accuracy is that count divided by the number of images, a fraction "
                        "from 0 to 1.")
    return ex.finish()


# ---------------------------------------------------------------- lesson 10
FLATTEN_HINTS = {
    "copies": "your views are not views of flat: writing into flat must change them (and "
              "the other way round).  Slice flat -- flat[offset:offset + n].reshape(shape) -- "
              "instead of copying or returning the arrays you were given.",
    "shape": "each view must have its array's shape: reshape the slice "
             "flat[offset:offset + n] to arrays[k].shape.",
    "overlap": "the slices overlap or leave gaps: array k starts where array k - 1 ends "
               "(offset += arrays[k].size after each one).",
}


def check_flatten(flatten, backend="numpy"):
    """Exercise 10.1: every array end to end in one flat buffer, and views into it.

    Compared with the arrays themselves (values, shapes, dtype), and with a count of the
    bytes: the views must share flat's memory, cover it exactly once, in order.  Then one
    update of the flat buffer must change every view, as the optimizers rely on.
    """
    ex = Exercise("10.1", "flatten", hint="flat = xp.empty(total size); for each array, "
                  "flat[offset:offset + n] = a.ravel(), its view is that slice reshaped, "
                  "offset += n.")
    xp = B.get_backend(backend)
    shapes = ((4, 3, 3, 3), (4,), (5, 36), (5,), (1,), (2, 1, 2))
    arrays = [_rand(shape, 300 + k, backend=backend) for k, shape in enumerate(shapes)]
    originals = [a.copy() for a in arrays]
    with ex.attempt():
        flat, views = flatten(arrays)
        total = sum(int(a.size) for a in arrays)
        ex.compare("flat: every value, in order", flat, xp.concatenate(
            [a.reshape(-1) for a in originals]), bound=0.0)
        ex.require(f"flat keeps the arrays' dtype ({arrays[0].dtype})",
                   flat.dtype == arrays[0].dtype, note=f"got {flat.dtype}")
        if not ex.require("one view per array", len(views) == len(arrays)):
            return ex.finish()
        for k, (view, a) in enumerate(zip(views, originals)):
            if tuple(view.shape) != tuple(a.shape):
                ex.require(f"view {k}: shape {tuple(a.shape)}", False,
                           note=f"got {tuple(view.shape)}")
                ex.diagnose(FLATTEN_HINTS["shape"])
                return ex.finish()
            ex.compare(f"view {k} {tuple(a.shape)}: its array's values", view, a, bound=0.0)
        flat[...] = xp.arange(total, dtype=flat.dtype)            # a write through flat ...
        seen = [B.as_numpy(v).ravel().copy() for v in views]            # (a copy: kept)
        if not ex.require("a write into flat shows in every view (views, not copies)",
                          not any(np.array_equal(s, B.as_numpy(o).ravel())
                                  for s, o in zip(seen, originals))):
            ex.diagnose(FLATTEN_HINTS["copies"])
            return ex.finish()
        starts = [int(s[0]) for s in seen]                        # ... tells where each lies
        want = np.cumsum([0] + [a.size for a in originals])[:-1]
        covered = np.concatenate(seen)
        if not ex.require("the views tile flat exactly once, in order",
                          starts == [int(w) for w in want]
                          and np.array_equal(covered, np.arange(total))):
            ex.diagnose(FLATTEN_HINTS["overlap"])
            return ex.finish()
        flat -= 1                                                  # one update for every array
        ex.require("one operation on flat updated every array",
                   all(np.array_equal(B.as_numpy(v).ravel(), s - 1) for v, s in zip(views, seen)))
    return ex.finish()


# ---------------------------------------------------------------- lesson 11
SALIENCY_INPUT_GRAD_HINT = ("model.backward gave nothing back: the models' conv1 skips its input "
                            "gradient (input_grad = False: in training nothing upstream needs "
                            "it).  Set model[\"conv1\"].input_grad = True before the pass.")
SALIENCY_HINTS = {
    "signed": "take the absolute value: a saliency map is |d s_c / d x|, how much a pixel "
              "matters, whichever way it moves the score.",
    "sum": "combine the channels with the largest absolute value (max over axis 1), not their "
           "sum: a pixel matters as much as its most important channel.",
    "all_classes": "start the backward pass from ONE score per image, that of classes[n]: dout "
                   "is 0 everywhere except a 1 at [n, classes[n]] (with all ones you get the "
                   "gradient of the sum of all scores).",
    "softmax": "the score is the logit, before the softmax: dout = one-hot of classes, "
               "not the gradient of the loss or of the probability.",
}


def _saliency_model(backend):
    """A small float64 network with a conv1 that skips its input gradient, as the models'."""
    from ..layers import Flatten, Sequential
    model = Sequential([("conv1", Conv2d(2, 3, 3, padding=1, rng=220)), ("relu1", ReLU()),
                        ("flatten", Flatten()), ("fc2", Linear(3 * 5 * 6, 4, rng=221))])
    model.to(backend, "float64")
    model["conv1"].params["bias"][...] = _rand((3,), 222, backend=backend)
    model["conv1"].input_grad = False
    return model.eval()


def check_saliency(saliency, backend="numpy"):
    """Exercise 11.1: |d score[n, classes[n]] / d x[n]|, max over channels: (N, H, W).

    Compared with the numerical gradient of each image's class score (central
    differences, float64; the inputs stay clear of ReLU's kink) and with
    ``diagnostics.input_gradient``.
    """
    from ..diagnostics import input_gradient
    ex = Exercise("11.1", "saliency", hint="set conv1's input_grad, run forward, set dout to a "
                  "one-hot of classes (N, K), run backward: the result is d s_c / d x, like x; "
                  "then its absolute value, the largest over the channels (axis 1).")
    xp = B.get_backend(backend)
    model = _saliency_model(backend)
    x = _rand((2, 2, 5, 6), 223, backend=backend)
    classes = xp.asarray(np.array([1, 3]))
    grads = input_gradient(model, x.copy(), B.as_numpy(classes))
    want = xp.abs(grads).max(axis=1)
    numeric = xp.zeros_like(x)
    for n, c in enumerate(B.as_numpy(classes)):
        image = x[n:n + 1].copy()
        numeric[n] = numerical_gradient(lambda: model.forward(image)[0, int(c)], image)[0]
    scores = model.forward(x)
    onehot = xp.zeros_like(scores)
    onehot[xp.arange(2), classes] = 1
    shifted = xp.exp(scores - scores.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    mistakes = {"signed": grads.max(axis=1), "sum": xp.abs(grads).sum(axis=1),
                "all_classes": xp.abs(_input_gradient(model, x, xp.ones_like(scores))).max(axis=1),
                "softmax": xp.abs(_input_gradient(model, x, (probs - onehot) / 2)).max(axis=1)}
    with ex.attempt():
        got = saliency(model, x.copy(), classes)
        ok = ex.compare("vs |numerical gradient|, max over channels", got,
                        xp.abs(numeric).max(axis=1), GRAD_BOUND)
        ok &= ex.compare("vs diagnostics.input_gradient", got, want)
        if not ok:
            for name, wrong in mistakes.items():
                if rel_error(got, wrong) <= REF_BOUND:
                    ex.diagnose(SALIENCY_HINTS[name])
                    break
    if ex.result.problem and "NoneType" in ex.result.problem:
        ex.diagnose(SALIENCY_INPUT_GRAD_HINT)
    return ex.finish()


def _input_gradient(model, x, dout):
    """What the backward pass from ``dout`` gives at the input (conv1's input gradient on)."""
    model["conv1"].input_grad = True
    try:
        model.forward(x)
        return model.backward(dout)
    finally:
        model["conv1"].input_grad = False


# ---------------------------------------------------------------- lesson 12
DEAD_HINTS = {
    "positions": "you counted zeros per position (or per value); a unit is a whole channel: it "
                 "is dead only if it is 0 at EVERY position of EVERY image.  Reduce over the "
                 "batch and the positions (axes 0, 2, 3), keep the channel axis.",
    "batch_only": "you reduced over the batch only: a channel alive at one position of one "
                  "image is alive.  Reduce over the positions too (axes 0, 2, 3).",
    "alive": "you returned the fraction of units that are ALIVE: dead means the largest output "
             "is 0.",
}


def check_dead_fraction(dead_fraction, backend="numpy"):
    """Exercise 12.1: the fraction of ReLU units (channels, features) that are 0 everywhere.

    Activations with a known number of planted dead units (the independent count),
    one channel alive at a single position of a single image, and a fully connected
    layer's (N, F) outputs; also compared with ``diagnostics.dead_units``.
    """
    from ..diagnostics import dead_units
    from ..layers import Sequential
    ex = Exercise("12.1", "dead_fraction", hint="a unit is dead when its largest output, over "
                  "all images and positions, is 0: reduce with max over every axis but axis 1, "
                  "compare with 0, and average over the units.")
    xp = B.get_backend(backend)
    rng = np.random.default_rng(230)
    conv = np.maximum(rng.standard_normal((6, 8, 4, 5)), 0)
    conv[:, [1, 4, 6]] = 0                                  # three dead channels of eight
    conv[:, 2] = 0
    conv[3, 2, 1, 4] = 0.5                                  # alive at one position of one image
    fc = np.maximum(rng.standard_normal((6, 10)), 0)
    fc[:, [0, 9]] = 0                                       # two dead features of ten
    fc[:, 3] = 0
    fc[5, 3] = 2.0
    cases = [("conv (6, 8, 4, 5): 3 dead of 8", conv, 3 / 8), ("fc (6, 10): 2 dead of 10", fc, 2 / 10)]
    wrong = {"positions": [float((a == 0).mean()) for _, a, _ in cases],
             "batch_only": [float((a.max(axis=0) <= 0).mean()) for _, a, _ in cases],
             "alive": [1 - w for _, _, w in cases]}
    # the package's own count, on a model whose only layer is a ReLU
    relu_model = Sequential([("relu", ReLU())])
    package = [dead_units(relu_model, B.to_backend(a, backend))["relu"] for _, a, _ in cases]
    got_all = []
    with ex.attempt():
        for (label, a, want), pack in zip(cases, package):
            got = _number(dead_fraction(B.to_backend(a, backend)))
            got_all.append(float(got) if B.is_array(got) else None)
            ex.compare(label, got, np.asarray(want), bound=1e-12)
            ex.compare(f"{label.split(':')[0]} vs diagnostics.dead_units", got, np.asarray(pack),
                       bound=1e-12)
    if ex.result.attempted and not ex.result.passed and None not in got_all and got_all:
        for name, values in wrong.items():
            if all(abs(g - v) < 1e-12 for g, v in zip(got_all, values)):
                ex.diagnose(DEAD_HINTS[name])
                break
    return ex.finish()


UPDATE_HINTS = {
    "elementwise": "you averaged the ratio weight by weight: the update-to-weight ratio is one "
                   "number per array, the NORM of the change over the norm of the weights, "
                   "sqrt(sum((after - before)**2)) / sqrt(sum(before**2)).",
    "squared": "you compared squared norms: take the square root of both sums.",
    "after": "divide by the norm of the weights BEFORE the step, not after it.",
}


def check_update_ratio(update_ratio, backend="numpy"):
    """Exercise 12.2: |after - before| / |before| for one weight array.

    Compared with a count on the host, element by element (the independent count),
    and with ``diagnostics.relative_change``.
    """
    from ..diagnostics import relative_change
    ex = Exercise("12.2", "update_ratio", hint="the Frobenius norm of the change divided by the "
                  "Frobenius norm of the weights before it.")
    cases = []
    for k, (shape, scale) in enumerate((((4, 3, 3, 3), 1e-2), ((5, 7), 0.3))):
        before = np.random.default_rng(240 + k).standard_normal(shape) * 0.05
        after = before + np.random.default_rng(250 + k).standard_normal(shape) * 0.05 * scale
        flat_b, flat_a = before.ravel().tolist(), after.ravel().tolist()
        by_hand = (sum((a - b) ** 2 for a, b in zip(flat_a, flat_b)) ** 0.5
                   / sum(b * b for b in flat_b) ** 0.5)
        cases.append((shape, before, after, by_hand))
    with ex.attempt():
        for shape, before, after, by_hand in cases:
            b, a = B.to_backend(before, backend), B.to_backend(after, backend)
            got = _number(update_ratio(b.copy(), a.copy()))
            ex.compare(f"{shape}: vs a count by hand", got, np.asarray(by_hand), bound=1e-10)
            package = relative_change({"w": b}, {"w": a})["w"]
            ex.compare(f"{shape}: vs diagnostics.relative_change", got, np.asarray(package),
                       bound=1e-10)
            if not ex.result.rows[-1].ok and B.is_array(got) and not ex.diagnoses:
                norm = lambda v: float(np.sqrt((v ** 2).sum()))            # noqa: E731
                mistakes = {"elementwise": float(np.mean(np.abs(after - before) / np.abs(before))),
                            "squared": by_hand ** 2,
                            "after": norm(after - before) / norm(after)}
                for name, value in mistakes.items():
                    if abs(float(B.as_numpy(got)) - value) <= 1e-10 * max(1.0, abs(value)):
                        ex.diagnose(UPDATE_HINTS[name])
                        break
    return ex.finish()


RANGE_HINTS = {
    "linear": "the rates must grow by the same FACTOR at every step (exponentially): "
              "factor = (high / low) ** (1 / (steps - 1)), rate k = low * factor**k.",
    "no_stop": "stop once the loss explodes: after recording a loss that is not finite or is "
               "more than `explode` times the lowest loss so far.",
    "stop_early": "record the loss that explodes before stopping, and stop only when a loss is "
                  "more than `explode` times the LOWEST loss so far (not the previous one).",
}


def _bowl(curvature=4.0):
    """One weight on the loss 0.5 c w^2, stepped by plain gradient descent: the loss falls
    for lr < 2 / c and explodes above it, at a rate known in advance."""
    state = {"w": 1.0}

    def step(lr):
        w = state["w"]
        loss = 0.5 * curvature * w * w
        state["w"] = w - lr * curvature * w
        return loss
    return step


def check_lr_range_test(lr_range_test):
    """Exercise 12.3: the learning-rate range test, on a bowl whose answer is known.

    On the loss 0.5 c w^2 gradient descent diverges for lr > 2 / c: the test must
    raise the rate geometrically, record the loss that explodes, stop there, and agree
    with ``diagnostics.lr_range_test`` step for step.
    """
    from ..diagnostics import lr_range_test as package_test
    ex = Exercise("12.3", "lr_range_test", hint="rate k = low * factor**k with factor = "
                  "(high / low) ** (1 / (steps - 1)); call step(rate) and record (rate, loss); "
                  "stop after a loss that is not finite or above explode times the lowest.")
    settings = [dict(low=1e-3, high=10.0, steps=60, explode=4.0),
                dict(low=1e-4, high=0.1, steps=20, explode=4.0)]      # never explodes
    with ex.attempt():
        for n, kw in enumerate(settings):
            want_rates, want_losses = package_test(_bowl(), **kw)
            got = lr_range_test(_bowl(), **kw)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                ex.result.problem = "lr_range_test must return two lists: (rates, losses)"
                return ex.finish()
            rates, losses = (np.asarray(v, dtype=np.float64) for v in got)
            tag = f"low {kw['low']:g}, high {kw['high']:g}, {kw['steps']} steps"
            ex.require(f"{tag}: first rate is low", len(rates) > 0 and
                       abs(rates[0] - kw["low"]) <= 1e-12 * kw["low"])
            ratio = rates[1:] / rates[:-1] if len(rates) > 1 else np.ones(1)
            geometric = ex.require(f"{tag}: the same factor at every step",
                                   np.ptp(ratio) <= 1e-9 * ratio.max())
            if not geometric and not ex.diagnoses:
                ex.diagnose(RANGE_HINTS["linear"])
            stopped = n == 0
            length_ok = ex.require(f"{tag}: {len(want_rates)} steps "
                                   + ("(stops at the explosion)" if stopped else "(all of them)"),
                                   len(rates) == len(want_rates))
            if not length_ok and not ex.diagnoses:
                ex.diagnose(RANGE_HINTS["no_stop" if len(rates) > len(want_rates)
                                        else "stop_early"])
            if length_ok:
                ex.compare(f"{tag}: rates vs diagnostics.lr_range_test", rates,
                           np.asarray(want_rates), bound=1e-12)
                ex.compare(f"{tag}: losses vs diagnostics.lr_range_test", losses,
                           np.asarray(want_losses), bound=1e-12)
    return ex.finish()


# ---------------------------------------------------------------- lesson 13
def _f23_direct(d, g):
    """The two outputs of a 3-tap correlation over four inputs, written out."""
    return np.array([d[0] * g[0] + d[1] * g[1] + d[2] * g[2],
                     d[1] * g[0] + d[2] * g[1] + d[3] * g[2]])


F23_TRANSPOSED_HINT = ("your matrices work if the third is transposed: you wrote B, not B^T. "
                       "Row k of B^T holds the coefficients of d in the k-th product: "
                       "m0 = (d0 - d2) g0 makes row 0 [1, 0, -1, 0].")


def _f23_row_fixes(AT, G, BT, d, g, want):
    """Which single row of AT, G or BT, replaced by a better one, makes every output right.

    y = AT [(G g) * (BT d)] is linear in each row of each matrix when the others are
    held fixed, so the best replacement of one row is a least-squares fit over the
    samples; a fit with no residual means that row alone is wrong.
    Returns ``[(matrix name, row)]``.
    """
    fixes = []
    Gg, Bd = g @ G.T, d @ BT.T                            # (samples, 4) each
    m = Gg * Bd
    for name, rows in (("AT", range(AT.shape[0])), ("G", range(G.shape[0])),
                       ("BT", range(BT.shape[0]))):
        for k in rows:
            if name == "AT":         # output k = AT[k] . m; the other outputs must be right
                others = [i for i in range(AT.shape[0]) if i != k]
                if rel_error(m @ AT[others].T, want[:, others]) > 1e-10:
                    continue
                design, target = m, want[:, k]
            else:                    # outputs = AT[:, k] m_k + the other products
                rest = (m - np.outer(m[:, k], np.eye(m.shape[1])[k])) @ AT.T
                other = Bd[:, k] if name == "G" else Gg[:, k]
                base = g if name == "G" else d
                # y[:, i] - rest[:, i] = AT[i, k] * other * (base . row): stack both outputs
                design = np.concatenate([AT[i, k] * other[:, None] * base
                                         for i in range(AT.shape[0])])
                target = np.concatenate([want[:, i] - rest[:, i] for i in range(AT.shape[0])])
            row, *_ = np.linalg.lstsq(design, target, rcond=None)
            if np.abs(design @ row - target).max() <= 1e-9 * (1 + np.abs(target).max()):
                fixes.append((name, k))
    return fixes


def check_f23_matrices(f23_matrices):
    """Exercise 13.1: A^T (2, 4), G (4, 3), B^T (4, 4) with y = A^T [(G g) * (B^T d)].

    Any correct set of matrices passes, not only the lesson's.  When the outputs are
    wrong the checker looks for the one thing that would fix them: B in place of B^T,
    or a single row of A^T, G or B^T, and names it.
    """
    ex = Exercise("13.1", "f23_matrices", hint="write m0..m3 as products (row k of G) . g times "
                  "(row k of B^T) . d; then y0 and y1 are sums of the m's: their coefficients are "
                  "the rows of A^T.")
    with ex.attempt():
        got = f23_matrices()
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            ex.result.problem = "f23_matrices must return three matrices: (AT, G, BT)"
            return ex.finish()
        AT, G, BT = (np.asarray(a, dtype=np.float64) for a in got)
        for name, a, shape in (("AT", AT, (2, 4)), ("G", G, (4, 3)), ("BT", BT, (4, 4))):
            if a.shape != shape:
                ex.result.problem = (f"{name}: expected shape {shape} (F(2, 3): 2 outputs, "
                                     f"3 taps, 4 inputs), got {a.shape}")
                return ex.finish()
        rng = np.random.default_rng(190)
        d, g = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
        y = ((g @ G.T) * (d @ BT.T)) @ AT.T
        want = np.stack([_f23_direct(dk, gk) for dk, gk in zip(d, g)])
        ex.compare("y0 = d0 g0 + d1 g1 + d2 g2, 50 random d, g", y[:, 0], want[:, 0], bound=1e-10)
        ex.compare("y1 = d1 g0 + d2 g1 + d3 g2, 50 random d, g", y[:, 1], want[:, 1], bound=1e-10)
        if not ex.result.passed:
            m = (g @ G.T) * (d @ BT.T)
            # y = AT [s * m] with one factor s_k per product: linear in s, fitted to the outputs
            design = np.concatenate([m * AT[i] for i in range(2)])
            scale, *_ = np.linalg.lstsq(design, want.T.ravel(), rcond=None)
            if rel_error(((g @ G.T) * (d @ BT)) @ AT.T, want) <= 1e-10:
                ex.diagnose(F23_TRANSPOSED_HINT)
            elif rel_error(design @ scale, want.T.ravel()) <= 1e-10:
                off = [(k, v) for k, v in enumerate(scale) if abs(v - 1) > 1e-6
                       and np.abs(AT[:, k]).max() > 0]
                ex.diagnose(_f23_scale_hint(off)) if off else None
            fixes = [] if ex.diagnoses else _f23_row_fixes(AT, G, BT, d, g, want)
            ex.diagnose(_f23_fix_hint(fixes)) if fixes else None
    return ex.finish()


def _f23_scale_hint(off):
    """The hint when every product is right up to a factor (a sign, a missing half)."""
    products = ", ".join(f"m{k} comes out {1 / v:.3g} times" for k, v in off)
    return (f"{products} what your A^T expects: a sign or a factor of 2 (a missing half) in one "
            "product.  Row k of G, row k of B^T and column k of A^T share m_k's factor between "
            "them: put it right in one of them (the lesson's m1 and m2 carry a half each, "
            "in G).")


def _f23_fix_hint(fixes):
    """The hint for the rows that alone would fix the outputs (see ``_f23_row_fixes``)."""
    names = {"AT": "A^T", "G": "G", "BT": "B^T"}
    if len(fixes) == 1:
        name, k = fixes[0]
        if name == "AT":
            return (f"only y{k} is wrong, and only row {k} of A^T needs to change: check which "
                    f"m's y{k} adds, and their signs.")
        what = "the kernel g" if name == "G" else "the inputs d"
        return (f"row {k} of {names[name]} is wrong, and only it: it says how m{k} combines "
                f"{what}.  Check its entries (signs, halves) against your formula for m{k}.")
    where = ", ".join(f"row {k} of {names[n]}" for n, k in fixes)
    return (f"changing any one of these alone would fix the outputs: {where}.  Look for the "
            "one whose entries disagree with your formulas for the m's and for y0, y1.")


def _correlate_tile(d, g):
    """Y[i, j] = sum_{a, b} d[i + a, j + b] g[a, b]: the direct 2-D correlation, on the host."""
    d, g = B.as_numpy(d), B.as_numpy(g)
    r = g.shape[0]
    m = d.shape[0] - r + 1
    return np.array([[np.sum(d[i:i + r, j:j + r] * g) for j in range(m)] for i in range(m)])


def check_winograd_tile(winograd_tile, backend="numpy"):
    """Exercise 13.2: Y = A^T [(G g G^T) * (B^T d B)] A for one tile."""
    from ..layers.winograd import F2x2_3x3, F4x4_3x3
    ex = Exercise("13.2", "winograd_tile", hint="in 2-D each 1-D transform L is applied along "
                  "the rows AND along the columns, L t L^T; the element-wise product is between "
                  "two n x n matrices (the kernel and the tile, each transformed); nothing "
                  "depends on the tile size.")
    xp = B.get_backend(backend)
    with ex.attempt():
        for k, w in enumerate((F2x2_3x3, F4x4_3x3)):
            n = w.m + w.r - 1
            d = _rand((n, n), 200 + k, backend=backend)
            g = _rand((w.r, w.r), 210 + k, backend=backend)
            AT, G, BT = (xp.asarray(np.array(a)) for a in (w.AT, w.G, w.BT))
            got = winograd_tile(d.copy(), g.copy(), AT, G, BT)
            want = B.to_backend(_correlate_tile(d, g), backend)
            ex.compare(f"F({w.m}x{w.m}, 3x3): {n}x{n} tile -> {w.m}x{w.m} outputs", got, want)
    return ex.finish()


# ---------------------------------------------------------------- lesson 14
def two_towers(fn, args):
    """Run ``fn(*args[rank], rank, swap)`` for rank 0 and 1 at once, in two threads, as two
    processes would: ``swap(a)`` hands ``a`` to the other tower and returns what it handed
    over (both must call it, the same number of times).  Returns ``(results, swaps)``; a
    NotImplementedError or another exception in either tower is raised here."""
    import threading
    box, calls = [None, None], [0, 0]
    barrier = threading.Barrier(2, timeout=3)      # a swap the other tower never makes
    results, errors = [None, None], [None, None]

    def swap_for(rank):
        def swap(a, what=None):
            calls[rank] += 1
            box[rank] = B.as_numpy(a).copy()
            barrier.wait()                           # both have put theirs down
            got = box[1 - rank].copy()
            barrier.wait()                           # both have picked theirs up
            return B.to_backend(got, B.backend_of(a))
        return swap

    def run(rank):
        try:
            results[rank] = fn(*args[rank], rank, swap_for(rank))
        except BaseException as err:              # noqa: B036 -- handed to the caller
            errors[rank] = err
            barrier.abort()                          # the other tower must not wait forever

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for err in errors:
        if isinstance(err, NotImplementedError):
            raise err
    for err in errors:
        if err is not None and not isinstance(err, threading.BrokenBarrierError):
            raise err
    if any(errors) or calls[0] != calls[1]:
        raise RuntimeError(f"tower 0 called swap {calls[0]} times, tower 1 {calls[1]} times: "
                           "both towers must swap at the same point, or each waits for the "
                           "other forever")
    return results, calls


class _PeerInThreads:
    """The package's Peer for ``two_towers``: ``rank``, ``other`` and its swap."""

    def __init__(self, rank, swap):
        self.rank, self.other, self.swap = rank, 1 - rank, swap


GATHER_HINTS = {
    "kept_own": "you kept only the gradient your own tower's layer sent back.  The other "
                "tower's layer read your half of y too: its dy holds a part of dL/dx for you. "
                "Send it the columns that are its half, and add what it sends you.",
    "sent_mine": "you sent your own columns of dy.  The other tower needs ITS columns of your "
                 "dy (what your layer owes its half); what comes back is its dy for yours.",
    "halves": "tower r's half of y is columns r*C/2 .. (r+1)*C/2 (tower 0 holds the first "
              "half): your result is the other tower's gradient.",
    "averaged": "add the two parts, do not average them: L depends on x through both towers' "
                "layers, and the chain rule sums over every path.",
}


def check_gather_backward(gather_backward):
    """Exercise 14.1: the backward of the towers' all-gather, run on two towers at once.

    Two towers hold x_0, x_1 (N, C/2, ...); forward, y = [x_0 | x_1] along axis 1 on both;
    tower t's next layer gives L_t = sum(tanh(y) * R_t), L = L_0 + L_1.  Each tower gets
    dy_t = dL_t/dy and must return dL/dx_t: compared with central differences of L
    (float64) and with the package's ``model_parallel.Gather``.
    """
    from ..parallel.model_parallel import Gather
    ex = Exercise("14.1", "gather_backward", hint="dL/dx_t = dy_0[:, cols_t] + dy_1[:, cols_t]: "
                  "slice the other tower's columns of your dy, swap them, add what comes back "
                  "to your own columns.")
    cases = []
    for k, shape in enumerate(((3, 10), (2, 6, 3, 4))):
        half = shape[1] // 2
        xs = [_rand((shape[0], half) + shape[2:], 260 + 2 * k + t) for t in (0, 1)]
        rs = [_rand(shape, 270 + 2 * k + t) for t in (0, 1)]

        def loss(x0=xs[0], x1=xs[1], rs=rs):
            y = np.tanh(np.concatenate((x0, x1), axis=1))
            return float((y * rs[0]).sum() + (y * rs[1]).sum())
        y = np.concatenate(xs, axis=1)
        dys = [(1 - np.tanh(y) ** 2) * r for r in rs]
        numeric = [numerical_gradient(loss, xs[t]) for t in (0, 1)]
        cases.append((shape, half, xs, dys, numeric))
    with ex.attempt():
        for shape, half, xs, dys, numeric in cases:
            got, _ = two_towers(gather_backward, [(dys[0].copy(),), (dys[1].copy(),)])

            def package(x, dy, rank, swap):
                gather = Gather(_PeerInThreads(rank, swap))
                gather.forward(x)
                return gather.backward(dy)
            want, _ = two_towers(package, [(xs[0], dys[0]), (xs[1], dys[1])])
            ok = True
            for t in (0, 1):
                ok &= ex.compare(f"{shape}, tower {t}: vs numerical gradient", got[t],
                                 numeric[t], GRAD_BOUND)
                ok &= ex.compare(f"{shape}, tower {t}: vs model_parallel.Gather", got[t],
                                 want[t])
            if not ok and not ex.diagnoses:
                cols = [slice(0, half), slice(half, 2 * half)]
                mistakes = {
                    "kept_own": [dys[t][:, cols[t]] for t in (0, 1)],
                    "sent_mine": [dys[t][:, cols[t]] + dys[1 - t][:, cols[1 - t]] for t in (0, 1)],
                    "halves": [want[1 - t] for t in (0, 1)],
                    "averaged": [want[t] / 2 for t in (0, 1)]}
                for name, wrong in mistakes.items():
                    if all(tuple(got[t].shape) == tuple(wrong[t].shape)
                           and rel_error(got[t], wrong[t]) <= REF_BOUND for t in (0, 1)):
                        ex.diagnose(GATHER_HINTS[name])
                        break
    return ex.finish()
