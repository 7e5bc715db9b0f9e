"""Flatten: (N, C, H, W) -> (N, C*H*W), the bridge from conv5 to fc6.

The order is C, then H, then W (row-major), as in PyTorch, so fc6's weight
columns line up with PyTorch's for the same network.  Backward reshapes back.
"""
from .module import Module


class Flatten(Module):
    def output_shape(self, input_shape):
        n = 1
        for d in input_shape:
            n *= d
        return (n,)

    def forward(self, x):
        self._check_input(x)
        out = x.reshape(x.shape[0], -1)
        self._save(out.shape, x.shape)
        return out

    def backward(self, dout):
        (x_shape,) = self._saved(dout)
        return dout.reshape(x_shape)
