"""MaxPool2d: the largest value in each window; the paper's windows overlap.

    y[n, c, oh, ow] = max_{0 <= i, j < k} x[n, c, oh*s + i, ow*s + j]

The paper pools 3x3 windows with stride 2 (z = 3 > s = 2), so neighbouring
windows share a row or column.  Against non-overlapping 2x2/2 pooling this cut
top-1/top-5 error by 0.4%/0.3% and made the net "slightly more difficult to overfit".

Shapes: (N, C, H, W) -> (N, C, OH, OW),  OH = (H - k) // s + 1.

Forward loops over the k*k window offsets (never over pixels): for offset
(i, j), one strided slice holds the value every window sees there, and a
running maximum over the k*k slices gives y.  Backward routes each dout to its
window's arg-max and nowhere else; for one offset the slice has no repeated
pixel, so ``+=`` into it is exact even though the windows overlap.  Ties go to
the first offset in row-major order, as in PyTorch.

The maths: ``functional.maxpool_forward`` / ``maxpool_backward``, whose backward
finds the winners again.  By default (``fast = True``) the layer runs
``fast.py``'s version, which remembers the winning offset of each window in
forward, in one byte per output.
"""
from ..errors import ShapeError
from . import fast, functional
from .im2col import conv_output_size
from .module import Module, check_setting


class MaxPool2d(Module):
    def __init__(self, kernel_size=3, stride=2):
        super().__init__()
        self.kernel_size = check_setting("MaxPool2d", "kernel_size", kernel_size)
        self.stride = check_setting("MaxPool2d", "stride", stride)
        self.fast = True        # run fast.py's version (True) or functional.py's readable one

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    def output_shape(self, input_shape):
        C, H, W = input_shape
        k = self.kernel_size
        if H < k or W < k:
            raise ShapeError(f"{self.label()}: input {H}x{W} is smaller than the {k}x{k} window")
        return (C, conv_output_size(H, k, self.stride, 0), conv_output_size(W, k, self.stride, 0))

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        self.output_shape(x.shape[1:])           # a clear error if x is smaller than the window
        k, s = self.kernel_size, self.stride
        if self.fast:
            out, argmax = fast.maxpool_forward(x, k, s)
            self._save(out.shape, True, x.shape, argmax)
        else:
            out = functional.maxpool_forward(x, k, s)
            self._save(out.shape, False, x.shape, x)
        return out

    def backward(self, dout):
        fast_path, x_shape, saved = self._saved(dout)
        k, s = self.kernel_size, self.stride
        if fast_path:
            return fast.maxpool_backward(dout, saved, x_shape, k, s)
        return functional.maxpool_backward(dout, saved, k, s)
