"""SoftmaxCrossEntropy: the paper's 1000-way softmax with multinomial logistic loss.

For logits z (N, K) and integer labels y (N,)::

    p[n, k] = exp(z[n, k]) / sum_j exp(z[n, j])
    L = -(1/N) * sum_n log p[n, y[n]]

Computed stably: subtracting each row's maximum from z changes no probability
but keeps exp() from overflowing, and log p = z - max - log(sum exp(z - max)).

Backward (the reason softmax and cross-entropy are fused into one layer)::

    dL/dz = (p - onehot(y)) / N

The maths: ``functional.softmax_cross_entropy``, which returns the loss and
dL/dz together; with ``fast = False`` forward keeps dL/dz for backward.  By
default (``fast = True``) the layer runs ``fast.py``'s version, which keeps each
row's maximum and log-sum-exp instead and computes dL/dz in backward; on a GPU
three kernels in all (``kernels/cross_entropy.py``).
"""
from ..backend import get_array_module, is_array
from ..errors import ShapeError, StateError
from . import fast, functional
from .functional import log_softmax  # noqa: F401  (the one log-softmax: metrics use it too)
from .module import Module


class SoftmaxCrossEntropy(Module):
    def __init__(self):
        super().__init__()
        self.fast = True        # fast.py's version (kernels on a GPU) or functional.py's

    def forward(self, logits, labels, labels_checked=False):
        """Mean cross-entropy over the batch, as a 0-d array on the logits' device.

        ``labels_checked``: their values were checked on the host already
        (``check_label_values``; a replayed CUDA graph's labels, copied in after the
        check): their range is not read back from the device again."""
        self._check_input(logits, 2, "(N, num_classes)")
        xp = get_array_module(logits)
        self._check_labels(logits, labels, values=not labels_checked)
        labels = xp.asarray(labels)             # the one copy of host labels to the device
        if self.fast:
            loss, stats = fast.softmax_cross_entropy(logits, labels)
            self._save((), ("fast", stats, labels), logits, labels)
        else:
            loss, dlogits = functional.softmax_cross_entropy(logits, labels)
            self._save((), ("readable", dlogits), logits, labels)
        return loss

    @property
    def labels(self):
        """The labels of the last forward, on the logits' device (the trainer's running
        numbers use them: host labels cross to the device once a step, here)."""
        if self._cache is None:
            raise StateError(f"{self.label()}: labels asked for before forward()")
        return self._cache[3]

    def _check_labels(self, logits, labels, values=True):
        N, K = logits.shape
        if not is_array(labels):
            raise ShapeError(f"{self.label()}: labels must be an integer array of shape ({N},), "
                             f"got {type(labels).__name__}")
        if labels.dtype.kind not in "iu":
            raise ShapeError(f"{self.label()}: labels must be integers, got dtype {labels.dtype}")
        if tuple(labels.shape) != (N,):
            raise ShapeError(f"{self.label()}: expected labels of shape ({N},) to match logits "
                             f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
        if values:
            self.check_label_values(labels, K)

    def check_label_values(self, labels, K):
        """Every label in [0, K): else a one-line ShapeError."""
        # On the GPU this reads two numbers back (a sync); the trainer passes
        # labels still on the host, where it is free.
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= K:
            raise ShapeError(f"{self.label()}: labels must lie in [0, {K - 1}] for {K} classes, "
                             f"got values from {low} to {high}")

    @property
    def probs(self):
        """Softmax probabilities of the last forward, shape (N, K)."""
        if self._cache is None:
            raise StateError(f"{self.label()}: probs asked for before forward()")
        logits = self._cache[2]
        return get_array_module(logits).exp(log_softmax(logits))

    def backward(self, dout=1.0):
        """dL/dlogits, scaled by ``dout`` (the upstream gradient of the loss, 1 by default)."""
        if not (isinstance(dout, (int, float)) or (is_array(dout) and dout.ndim == 0)):
            raise ShapeError(f"{self.label()}: backward expects a scalar dout, got {type(dout).__name__}")
        if self._cache is None:
            raise StateError(f"{self.label()}: backward() called before forward()")
        saved, logits = self._cache[1], self._cache[2]
        if saved[0] == "fast":
            return fast.softmax_cross_entropy_backward(logits, saved[2], saved[1], dout)
        dlogits = saved[1]
        xp = get_array_module(dlogits)
        # a new array (backward may be called again), made in one pass, of the logits'
        # dtype whatever dout's (out= casts the product back)
        return xp.multiply(dlogits, dout, out=xp.empty_like(dlogits))
