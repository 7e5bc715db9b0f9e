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
from ..backend import get_array_module
from ..errors import ShapeError
from .module import Module


def channel_window_sum(a, size):
    """s[:, c] = sum of a[:, j] for |j - c| <= size // 2 (zero outside 0..C-1)."""
    xp = get_array_module(a)
    half = size // 2
    N, C = a.shape[:2]
    padded = xp.zeros((N, C + 2 * half) + a.shape[2:], dtype=a.dtype)
    padded[:, half:half + C] = a
    s = padded[:, 0:C].copy()
    for d in range(1, size):
        s += padded[:, d:d + C]
    return s


class LocalResponseNorm(Module):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ShapeError(f"LocalResponseNorm: size must be a positive odd number, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        xp = get_array_module(x)
        D = self.k + self.alpha * channel_window_sum(x * x, self.size)
        scale = D ** -self.beta
        out = x * scale
        self._save(out.shape, x, D, scale)
        return out

    def backward(self, dout):
        x, D, scale = self._saved(dout)
        out = x * scale
        inner = channel_window_sum(dout * out / D, self.size)
        return dout * scale - (2.0 * self.alpha * self.beta) * x * inner
