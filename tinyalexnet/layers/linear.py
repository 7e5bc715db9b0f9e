"""Linear: the fully connected layer, y = x W^T + b.

Every output neuron sees every input: fc6 alone holds 37.7 of AlexNet's 61
million parameters.

Shapes:  x (N, in_features) -> y (N, out_features)
Weights: W (out_features, in_features), b (out_features,)  -- PyTorch's layout.

Backward (``functional.linear_backward``)::

    dx = dout @ W          dW = dout^T @ x          db = sum of dout over the batch

By default (``fast = True``) forward and backward run ``fast.linear_forward`` and
``fast.linear_backward``: the same
maths, writing dW and db straight into the layer's gradients.
"""
from .. import init
from ..errors import ShapeError
from . import fast, functional
from .module import Module, check_setting


class Linear(Module):
    """``Linear(in_features, out_features, rng=None, draw=True)``

    Weights are drawn from N(0, 2 / in_features) (He) with ``rng`` (a NumPy Generator,
    a seed, or None for a fresh one); ``draw=False`` leaves them at zero for
    ``init.init_model`` to fill (the model builders do that: each weight drawn once).
    """

    def __init__(self, in_features, out_features, rng=None, draw=True):
        super().__init__()
        self.in_features = check_setting("Linear", "in_features", in_features)
        self.out_features = check_setting("Linear", "out_features", out_features)
        shape = (self.out_features, self.in_features)
        weight = (init.he_normal(shape, self.in_features, init.default_rng(rng)) if draw
                  else init.zeros(shape))
        self.register_parameter("weight", weight)
        self.register_parameter("bias", init.zeros(self.out_features))
        # fast.py's backward, writing the gradients in place (True), or functional.py's
        self.fast = True

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ShapeError(f"{self.label()}: expected {self.in_features} input features, "
                             f"got input shape {tuple(input_shape)}")
        return (self.out_features,)

    def macs(self, input_shape):
        return self.in_features * self.out_features

    def forward(self, x):
        self._check_input(x, 2, "(N, in_features)", channels=self.in_features,
                          what="input features")
        self._save((x.shape[0], self.out_features), x)
        if self.fast:
            return fast.linear_forward(x, self.params["weight"], self.params["bias"])
        return functional.linear_forward(x, self.params["weight"], self.params["bias"])

    def backward(self, dout):
        (x,) = self._saved(dout)
        if self.fast:
            return fast.linear_backward(dout, x, self.params["weight"], self.grads["weight"],
                                        self.grads["bias"])
        dx, dW, db = functional.linear_backward(dout, x, self.params["weight"])
        self.grads["weight"][...] = dW
        self.grads["bias"][...] = db
        return dx
