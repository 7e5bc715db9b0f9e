"""ReLU: the rectified linear unit, f(x) = max(0, x).

The paper's Figure 1: a four-layer CNN with ReLUs reached 25% training error on
CIFAR-10 six times faster than the same net with tanh.  A ReLU does not
saturate for positive inputs, so its gradient does not vanish there.

Shapes: any -> same.   Backward: dx = dout where x > 0, else 0.
(At x = 0 exactly the derivative is undefined; like every framework we use 0.)
The maths: ``functional.relu_forward`` / ``relu_backward``.  By default
(``fast = True``) the layer runs ``fast.py``'s version, which on a GPU is one
kernel each way (``kernels/relu.py``) and elsewhere the same array code.
"""
from . import fast, functional
from .module import Module


class ReLU(Module):
    def __init__(self):
        super().__init__()
        self.fast = True        # fast.py's version (one kernel on a GPU) or functional.py's

    def forward(self, x):
        self._check_input(x)
        if self.fast:
            out, positive = fast.relu_forward(x)
        else:
            out, positive = functional.relu_forward(x), x > 0
        # backward needs only the sign: a quarter of x's bytes
        self._save(x.shape, positive)
        return out

    def backward(self, dout):
        (positive,) = self._saved(dout)
        if self.fast:
            return fast.relu_backward(dout, positive)
        # functional.relu_backward(dout, x) is dout * (x > 0); the comparison was made
        # once, in forward (comparing the bool mask with 0 again would cost a pass).
        return dout * positive
