"""Tanh: the saturating activation the paper compares ReLU against, f(x) = tanh(x).

The paper's Figure 1 trains the same four-layer CNN twice, once with ReLUs and
once with tanh units, and counts the epochs to 25% training error on CIFAR-10:
ReLU got there six times faster.  Lesson 4 repeats that comparison with this
layer.  For |x| beyond about 2, tanh is nearly flat, so its gradient (below) is
nearly zero there: a saturated unit learns slowly.

Shapes: any -> same.   Backward, from the saved output y (``functional.tanh_backward``)::

    dx = dout * (1 - y^2)          (d tanh(x) / dx = 1 - tanh(x)^2)
"""
from . import functional
from .module import Module


class Tanh(Module):
    def forward(self, x):
        self._check_input(x)
        out = functional.tanh_forward(x)
        self._save(out.shape, out)      # the derivative needs only the output
        return out

    def backward(self, dout):
        (out,) = self._saved(dout)
        return functional.tanh_backward(dout, out)
