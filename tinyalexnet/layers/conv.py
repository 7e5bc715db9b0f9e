"""Conv2d: the convolutional layer, as im2col + one matrix product per group.

For output channel f, sample n and position (oh, ow)::

    y[n, f, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * x_pad[n, g*Cg + c, oh*s + i, ow*s + j]

where g = f // (F/G) is the group of f and Cg = C/G its input channels.  With
groups G > 1 the channels split into G independent towers: output channel f
sees only the input channels of its own group.  The paper trained AlexNet on
two GPUs, each holding half of the kernels of every layer; conv2, conv4 and
conv5 took input only from the half on the same GPU.  ``groups=2`` is exactly
that connectivity on one device (and why conv2's kernels are 5x5x48, not 5x5x96).

Shapes:  x (N, C, H, W)  ->  y (N, F, OH, OW),  OH = (H + 2p - kh) // s + 1
Weights: W (F, C/G, kh, kw), b (F,)  -- PyTorch's layout.

Backward, with cols the im2col matrix of x and dy the gradient reshaped like W @ cols::

    dW = dy @ cols^T        db = sum of dy over (n, oh, ow)
    dx = col2im(W^T @ dy)

The layer runs the batch-last forms of im2col/col2im (columns ordered
(oh, ow, n); see im2col.py): same products, several times less time in the copies.
Backward rebuilds cols from x unless ``cache_cols`` is set, which trades
kh*kw times the input's memory for one im2col per step.

3x3 stride-1 layers (conv3-5) can instead run Winograd's F(2x2, 3x3)
(winograd.py): the same result with up to 2.25x fewer multiplications in the
products.  ``use_winograd = True`` switches it on (see the end of this file);
with ``cache_cols`` it keeps its transformed tiles instead of cols.
"""
from ..backend import get_array_module
from ..errors import ShapeError
from .. import init
from .im2col import col2im_batch_last, conv_output_size, im2col_batch_last
from .module import Module, check_int
from .winograd import winograd_conv2d_backward, winograd_conv2d_forward


def _pair(name, v):
    """kernel_size=3 means (3, 3); a pair (kh, kw) is kept as it is."""
    pair = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(pair) != 2:
        raise ShapeError(f"Conv2d: {name} must be an integer or a pair (kh, kw), got {v!r}")
    return tuple(check_int("Conv2d", name, k, 1) for k in pair)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 rng=None):
        super().__init__()
        in_channels = check_int("Conv2d", "in_channels", in_channels, 1)
        out_channels = check_int("Conv2d", "out_channels", out_channels, 1)
        groups = check_int("Conv2d", "groups", groups, 1)
        stride = check_int("Conv2d", "stride", stride, 1)
        padding = check_int("Conv2d", "padding", padding, 0)
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride, self.padding = stride, padding
        # The first layer of a network has nobody to hand dx to; setting this to
        # False skips col2im and a third of the layer's backward multiply-adds.
        self.input_grad = True
        # Keep im2col's matrix from forward for backward (kh*kw times the memory of
        # x, per layer) instead of rebuilding it from x.  See BENCHMARKS.md.
        self.cache_cols = False
        # Winograd's F(2x2, 3x3) instead of im2col where it applies (3x3, stride 1).
        # See the Winograd section at the end of the class, and USE_WINOGRAD below.
        self.use_winograd = USE_WINOGRAD
        kh, kw = self.kernel_size
        shape = (out_channels, in_channels // groups, kh, kw)
        rng = init.default_rng(rng)
        self.params["weight"] = init.he_normal(shape, shape[1] * kh * kw, rng)
        self.params["bias"] = init.np.zeros(out_channels, dtype="float32")
        self.grads["weight"] = init.np.zeros_like(self.params["weight"])
        self.grads["bias"] = init.np.zeros_like(self.params["bias"])

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
        if self.winograd_applies():
            return self._winograd_forward(x)
        xp = get_array_module(x)
        N = x.shape[0]
        F, OH, OW = self.output_shape(x.shape[1:])
        kh, kw = self.kernel_size
        G = self.groups
        cols = im2col_batch_last(x, kh, kw, self.stride, self.padding)  # (C*kh*kw, OH*OW*N)
        cols = cols.reshape(G, -1, OH * OW * N)                         # (G, Cg*kh*kw, OH*OW*N)
        w = self.params["weight"].reshape(G, F // G, -1)                # (G, F/G, Cg*kh*kw)
        y = xp.matmul(w, cols)                                          # (G, F/G, OH*OW*N)
        # cols is kh*kw times the size of x: keep it only if asked (see cache_cols).
        self._save((N, F, OH, OW), x.shape, cols if self.cache_cols else x)
        del cols
        # y is (F, OH, OW, N); one pass moves the batch axis to the front and adds the bias.
        out = xp.empty((N, F, OH, OW), dtype=y.dtype)
        xp.add(y.reshape(F, OH, OW, N).transpose(3, 0, 1, 2),
               self.params["bias"].reshape(1, F, 1, 1), out=out)
        return out

    def backward(self, dout):
        x_shape, saved = self._saved(dout)
        if x_shape is _WINOGRAD:
            return self._winograd_backward(dout, saved)
        xp = get_array_module(dout)
        N, F, OH, OW = dout.shape
        kh, kw = self.kernel_size
        G = self.groups
        dy = xp.ascontiguousarray(dout.transpose(1, 2, 3, 0)).reshape(G, F // G, OH * OW * N)
        if self.cache_cols:
            cols = saved
        else:
            cols = im2col_batch_last(saved, kh, kw, self.stride, self.padding)
            cols = cols.reshape(G, -1, OH * OW * N)
        w = self.params["weight"].reshape(G, F // G, -1)
        self.grads["bias"][...] = dy.sum(axis=2).reshape(F)
        # dW = dy @ cols^T, one 2-D product per group written straight into the grad.
        # cols[g].T is a transposed view: BLAS (and cuBLAS) read it through their
        # transpose flag.  A 3-D matmul would make CuPy copy all of cols first.
        dw = self.grads["weight"].reshape(G, F // G, -1)                # a view of the grad
        for g in range(G):
            xp.matmul(dy[g], cols[g].T, out=dw[g])
        del cols                # a rebuilt cols can go before dcols, as large, is made
        if not self.input_grad:
            return None
        dcols = xp.matmul(w.transpose(0, 2, 1), dy)                     # (G, Cg*kh*kw, OH*OW*N)
        return col2im_batch_last(dcols, x_shape, kh, kw, self.stride, self.padding)

    # ------------------------------------------------------------ fast path: Winograd F(2x2, 3x3)
    def winograd_applies(self):
        """True when this layer runs Winograd's F(2x2, 3x3): ``use_winograd`` is on and the
        kernel is 3x3 with stride 1 (any padding, any groups)."""
        return bool(self.use_winograd) and self.kernel_size == (3, 3) and self.stride == 1

    def _winograd_forward(self, x):
        # cache_cols here keeps Winograd's transformed tiles, its counterpart of cols.
        out, cache = winograd_conv2d_forward(x, self.params["weight"], self.params["bias"],
                                             self.padding, self.groups,
                                             keep_tiles=self.cache_cols)
        self._save(out.shape, _WINOGRAD, cache)
        return out

    def _winograd_backward(self, dout, cache):
        dx, dW, db = winograd_conv2d_backward(dout, cache, input_grad=self.input_grad)
        self.grads["weight"][...] = dW
        self.grads["bias"][...] = db
        return dx


# The default of Conv2d.use_winograd.  Off: on this project's 2-core CPU, Winograd was
# not reliably faster than im2col with NumPy's two BLAS threads (0.84-1.19x per layer,
# 0.91-1.09x per training step), and much slower on a busy machine; with one BLAS
# thread it was 1.13-1.31x per layer (BENCHMARKS.md, "Winograd").  Measure yours:
# python -m tinyalexnet.bench_conv.
USE_WINOGRAD = False
_WINOGRAD = "winograd"      # what forward saves in place of x's shape on the Winograd path
