"""Conv2d: the convolutional layer, as im2col + one matrix product per group.

Its equations, forward and backward, are written in ``functional.conv_forward``
and ``functional.conv_backward`` (the one place; read them first).  This class
holds the weights and their gradients, checks its settings and input, keeps
what backward needs, and chooses how the same maths runs.

Shapes:  x (N, C, H, W)  ->  y (N, F, OH, OW),  OH = (H + 2p - kh) // s + 1
Weights: W (F, C/G, kh, kw), b (F,)  -- PyTorch's layout.

With groups G > 1 the channels split into G independent towers: output channel
f sees only the input channels of its own group.  The paper trained AlexNet on
two GPUs, each holding half of the kernels of every layer; conv2, conv4 and
conv5 took input only from the half on the same GPU.  ``groups=2`` is exactly
that connectivity on one device (and why conv2's kernels are 5x5x48, not 5x5x96).

By default (``fast = True``) the layer runs the same maths from ``fast.py``,
with the batch as the last axis of im2col's matrix cols: the same products,
several times less time in the copies.  Backward rebuilds cols from x unless
``cache_cols`` is set (fast path only), which trades kh*kw times the input's
memory for one im2col per step.

3x3 stride-1 layers (conv3-5) can instead run Winograd's F(2x2, 3x3)
(``winograd.py``, lesson 13): the same result with up to 2.25x fewer
multiplications in the products.  ``use_winograd = True`` switches it on (on the
fast path only); with ``cache_cols`` it keeps its transformed tiles instead of
cols.  Off by default: see ``USE_WINOGRAD`` at the end of this file.
"""
from ..errors import ConfigError, ShapeError
from .. import init
from . import fast, functional, winograd
from .im2col import conv_output_size
from .module import Module, check_setting


def _pair(name, v):
    """kernel_size=3 means (3, 3); a pair (kh, kw) is kept as it is."""
    pair = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(pair) != 2:
        raise ConfigError(f"Conv2d: {name} must be an integer or a pair (kh, kw), got {v!r}")
    return tuple(check_setting("Conv2d", name, k) for k in pair)


class Conv2d(Module):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, rng=None,
    draw=True)``: PyTorch's arguments; ``kernel_size`` an integer or a pair (kh, kw).

    Weights are drawn from N(0, 2 / fan_in) (He) with ``rng`` (a NumPy Generator, a
    seed, or None for a fresh one); ``draw=False`` leaves them at zero for
    ``init.init_model`` to fill (the model builders do that: each weight drawn once).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 rng=None, draw=True):
        super().__init__()
        in_channels = check_setting("Conv2d", "in_channels", in_channels)
        out_channels = check_setting("Conv2d", "out_channels", out_channels)
        groups = check_setting("Conv2d", "groups", groups)
        stride = check_setting("Conv2d", "stride", stride)
        padding = check_setting("Conv2d", "padding", padding)
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                              f"({out_channels}) must both be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride, self.padding = stride, padding
        # Run fast.py's batch-last version (True) or functional.py's readable one.
        self.fast = True
        # The first layer of a network has nobody to hand dx to; setting this to
        # False skips col2im and a third of the layer's backward multiply-adds
        # (on the fast path; the readable one computes dx and drops it).
        self.input_grad = True
        # Keep im2col's matrix from forward for backward (kh*kw times the memory of
        # x, per layer) instead of rebuilding it from x.  See BENCHMARKS.md.
        self.cache_cols = False
        # Winograd's F(2x2, 3x3) instead of im2col where it applies (3x3, stride 1, fast
        # path): see winograd_applies and USE_WINOGRAD below.
        self.use_winograd = USE_WINOGRAD
        kh, kw = self.kernel_size
        shape = (out_channels, in_channels // groups, kh, kw)
        fan_in = shape[1] * kh * kw
        weight = init.he_normal(shape, fan_in, init.default_rng(rng)) if draw else init.zeros(shape)
        self.register_parameter("weight", weight)
        self.register_parameter("bias", init.zeros(out_channels))

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.padding:
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s

    def output_shape(self, input_shape):
        C, H, W = input_shape
        if C != self.in_channels:
            raise ShapeError(f"{self.label()}: expected {self.in_channels} input channels, "
                             f"got input shape {tuple(input_shape)}")
        kh, kw = self.kernel_size
        if H + 2 * self.padding < kh or W + 2 * self.padding < kw:
            raise ShapeError(f"{self.label()}: input {H}x{W} with padding {self.padding} is smaller "
                             f"than the {kh}x{kw} kernel")
        return (self.out_channels, conv_output_size(H, kh, self.stride, self.padding),
                conv_output_size(W, kw, self.stride, self.padding))

    def macs(self, input_shape):
        F, OH, OW = self.output_shape(input_shape)
        kh, kw = self.kernel_size
        return F * OH * OW * (self.in_channels // self.groups) * kh * kw

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)", channels=self.in_channels)
        self.output_shape(x.shape[1:])           # a clear error if x is smaller than the kernel
        W, b = self.params["weight"], self.params["bias"]
        if self.winograd_applies():                       # the Winograd switch: winograd.py
            out, cache = winograd.winograd_conv2d_forward(x, W, b, self.padding, self.groups,
                                                          keep_tiles=self.cache_cols)
            self._save(out.shape, "winograd", cache)
            return out
        settings = (self.stride, self.padding, self.groups)
        if self.fast:
            out, cols = fast.conv_forward(x, W, b, *settings, keep_cols=self.cache_cols)
        else:
            out, cols = functional.conv_forward(x, W, b, *settings), None
        # Backward needs cols; if forward did not keep it (see cache_cols), x to rebuild it.
        self._save(out.shape, "fast" if self.fast else "readable", x.shape,
                   x if cols is None else None, cols)
        return out

    def backward(self, dout):
        path, *saved = self._saved(dout)
        W = self.params["weight"]
        settings = (self.stride, self.padding, self.groups)
        if path == "winograd":
            dx, dW, db = winograd.winograd_conv2d_backward(dout, saved[0],
                                                           input_grad=self.input_grad)
        elif path == "fast":        # writes the gradients in place: no copy into grads
            x_shape, x, cols = saved
            dx, _, _ = fast.conv_backward(dout, W, x_shape, *settings, x=x, cols=cols,
                                          input_grad=self.input_grad, dW=self.grads["weight"],
                                          db=self.grads["bias"])
            return dx if self.input_grad else None
        else:
            x_shape, x, cols = saved
            dx, dW, db = functional.conv_backward(dout, x, W, *settings)
        self.grads["weight"][...] = dW
        self.grads["bias"][...] = db
        return dx if self.input_grad else None

    def winograd_applies(self):
        """True when forward runs Winograd's F(2x2, 3x3): ``use_winograd`` and ``fast`` are on
        and the kernel is 3x3 with stride 1 (any padding, any groups)."""
        return (bool(self.use_winograd) and self.fast and self.kernel_size == (3, 3)
                and self.stride == 1)


# The default of Conv2d.use_winograd.  Off: on this project's 2-core CPU, Winograd was
# not reliably faster than im2col with NumPy's two BLAS threads (0.84-1.19x per layer,
# 0.91-1.09x per training step), and much slower on a busy machine; with one BLAS
# thread it was 1.13-1.31x per layer (BENCHMARKS.md, "Winograd").  Measure yours:
# python -m tinyalexnet.bench_conv.
USE_WINOGRAD = False
