"""LocalResponseNorm: the paper's "brightness normalization" across channels.

Each activation is divided by a power of the energy of its neighbours at the
same pixel in the n adjacent channels (section 3.3 of the paper), with the
paper's k = 2, n = 5, alpha = 1e-4, beta = 0.75.  Kernels that respond
strongly suppress their neighbours: "lateral inhibition" as in real neurons.
The paper found it cut top-1/top-5 error by 1.4%/1.2% on ImageNet.

The equations, forward and backward, are written in ``functional.lrn_forward``
and ``functional.lrn_backward`` (the one place; read them first).  By default
(``fast = True``) the layer runs ``fast.py``'s version, which keeps the
denominator D and D^-beta from forward for backward and works in place.

Shapes: (N, C, H, W) -> (N, C, H, W).   ``size`` (n) must be odd (a centred window).

Mapping to other libraries: alpha here is *not* divided by n.  PyTorch's
``nn.LocalResponseNorm`` and Caffe's LRN use alpha/n in the sum, so the paper's
layer is ``torch.nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)``.
Chainer's ``local_response_normalization`` uses alpha as here.
"""
from . import fast, functional
from .module import Module, check_setting


class LocalResponseNorm(Module):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        name = "LocalResponseNorm"
        self.size = check_setting(name, "size", size)
        self.alpha = check_setting(name, "alpha", alpha)
        self.beta = check_setting(name, "beta", beta)
        self.k = check_setting(name, "k", k)
        self.fast = True        # run fast.py's version (True) or functional.py's readable one

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        settings = (self.size, self.alpha, self.beta, self.k)
        if self.fast:
            out, D, scale = fast.lrn_forward(x, *settings)
            self._save(out.shape, True, x, D, scale)
        else:
            out = functional.lrn_forward(x, *settings)
            self._save(out.shape, False, x, None, None)
        return out

    def backward(self, dout):
        fast_path, x, D, scale = self._saved(dout)
        if fast_path:
            return fast.lrn_backward(dout, x, D, scale, self.size, self.alpha, self.beta)
        return functional.lrn_backward(dout, x, self.size, self.alpha, self.beta, self.k)
