"""LocalResponseNorm: the paper's "brightness normalization" across channels.

Each activation is divided by the energy of its neighbours at the same pixel in
the n adjacent channels (section 3.3 of the paper)::

    b[c] = a[c] / D[c]^beta,    D[c] = k + alpha * sum_{j = max(0, c - n/2)}^{min(C-1, c + n/2)} a[j]^2

with the paper's k = 2, n = 5, alpha = 1e-4, beta = 0.75.  Kernels that respond
strongly suppress their neighbours: "lateral inhibition" as in real neurons.
The paper found it cut top-1/top-5 error by 1.4%/1.2% on ImageNet.

Mapping to other libraries: alpha here is *not* divided by n.  PyTorch's
``nn.LocalResponseNorm`` and Caffe's LRN use alpha/n in the sum, so the paper's
layer is ``torch.nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)``.
Chainer's ``local_response_normalization`` uses alpha as here.

Shapes: (N, C, H, W) -> (N, C, H, W).   ``size`` must be odd (a centred window).

Backward.  With S[c] the window sum above, the chain rule through D gives::

    dx[j] = dout[j] * D[j]^-beta  -  2 * alpha * beta * a[j] * sum_{c in window(j)} dout[c] * b[c] / D[c]

(the window is symmetric, so "c whose window holds j" is "c in j's window").
"""
from ..errors import ShapeError
from .module import Module


def channel_window_sum(a, size):
    """s[:, c] = sum of a[:, j] for |j - c| <= size // 2 (zero outside 0..C-1).

    Start from a itself and add the neighbours d = 1 .. size//2 channels away on
    each side; a channel near the edge simply has fewer neighbours to add, so no
    zero-padded copy of a is needed.
    """
    s = a.copy()
    for d in range(1, size // 2 + 1):
        s[:, d:] += a[:, :-d]     # the neighbour d channels below
        s[:, :-d] += a[:, d:]     # the neighbour d channels above
    return s


class LocalResponseNorm(Module):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ShapeError(f"LocalResponseNorm: size must be a positive odd number, got {size}")
        # Python floats: a NumPy float64 scalar here would upcast float32 activations.
        self.size, self.alpha, self.beta, self.k = size, float(alpha), float(beta), float(k)

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        D = channel_window_sum(x * x, self.size)
        D *= self.alpha                   # in place: these arrays are as large as x
        D += self.k
        scale = D ** -self.beta
        out = x * scale
        self._save(out.shape, x, D, scale)
        return out

    def backward(self, dout):
        x, D, scale = self._saved(dout)
        t = dout * x                      # dout * b / D, with b = x * scale
        t *= scale
        t /= D
        inner = channel_window_sum(t, self.size)
        inner *= x
        inner *= 2.0 * self.alpha * self.beta
        dx = dout * scale
        dx -= inner
        return dx
