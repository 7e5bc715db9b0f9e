"""Linear: the fully connected layer, y = x W^T + b.

Every output neuron sees every input: fc6 alone holds 37.7 of AlexNet's 61
million parameters.

Shapes:  x (N, in_features) -> y (N, out_features)
Weights: W (out_features, in_features), b (out_features,)  -- PyTorch's layout.

Backward::

    dx = dout @ W          dW = dout^T @ x          db = sum of dout over the batch
"""
import numbers

from .. import init
from ..errors import ShapeError
from .module import Module


class Linear(Module):
    def __init__(self, in_features, out_features, rng=None):
        super().__init__()
        for what, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, numbers.Integral) or n < 1:
                raise ShapeError(f"Linear: {what} must be a positive integer, got {n!r}")
        self.in_features, self.out_features = in_features, out_features
        rng = init.default_rng(rng)
        self.params["weight"] = init.he_normal((out_features, in_features), in_features, rng)
        self.params["bias"] = init.np.zeros(out_features, dtype="float32")
        self.grads["weight"] = init.np.zeros_like(self.params["weight"])
        self.grads["bias"] = init.np.zeros_like(self.params["bias"])

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
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, dout):
        x = self._saved(dout)
        self.grads["weight"][...] = dout.T @ x
        self.grads["bias"][...] = dout.sum(axis=0)
        return dout @ self.params["weight"]
