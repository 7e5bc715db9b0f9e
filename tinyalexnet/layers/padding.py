"""ZeroPad2d: surround each feature map with zeros.

The 32x32 AlexNet (``alexnet32``, from a published CIFAR-10 comparison) pads conv1's
22x22 output to 26x26 before pooling, so that the 3x3/2 pool gives 12x12.
Shapes: (N, C, H, W) -> (N, C, H + 2p, W + 2p).
Backward crops the border away: the zeros did not depend on the input.
"""
from ..backend import get_array_module
from .module import Module, check_setting


class ZeroPad2d(Module):
    def __init__(self, padding):
        super().__init__()
        self.padding = check_setting("ZeroPad2d", "padding", padding)

    def extra_repr(self):
        return str(self.padding)

    def output_shape(self, input_shape):
        C, H, W = input_shape
        return (C, H + 2 * self.padding, W + 2 * self.padding)

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        p = self.padding
        out = get_array_module(x).pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        self._save(out.shape, None)
        return out

    def backward(self, dout):
        self._saved(dout)
        p = self.padding
        H, W = dout.shape[2] - 2 * p, dout.shape[3] - 2 * p
        return dout[:, :, p:p + H, p:p + W]
