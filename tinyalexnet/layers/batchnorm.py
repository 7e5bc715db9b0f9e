"""BatchNorm2d: batch normalisation (Ioffe and Szegedy, 2015), what replaced LRN.

AlexNet normalises across channels at each pixel (LRN, ``lrn.py``).  Three
years later batch normalisation standardised each channel over the batch
instead, and let the network choose the scale it wants back::

    x_hat = (x - mean[c]) / sqrt(var[c] + eps),     y = gamma[c] * x_hat + beta[c]

In **training** mean and var are the batch's own, over its N x H x W values of
channel c; each batch also updates running averages of them,

    running_mean <- (1 - momentum) running_mean + momentum mean
    running_var  <- (1 - momentum) running_var  + momentum var * M / (M - 1)

(M = N H W; the running variance is the unbiased one, as in PyTorch).  In
**evaluation** (``model.eval()``) the running averages are used, so that an
image's output no longer depends on the other images of its batch.

Shapes: (N, C, H, W) -> (N, C, H, W).  Parameters (PyTorch's names): ``weight``
(gamma, starts at 1) and ``bias`` (beta, starts at 0), both (C,).  Buffers, in
the state_dict as in ``torch.nn.BatchNorm2d``: ``running_mean`` (C,),
``running_var`` (C,), ``num_batches_tracked`` (an int64 count).  A state_dict
of this layer loads into ``torch.nn.BatchNorm2d(C)`` and back.

Backward (``functional.batchnorm_backward``), with fixed statistics
``dx = gamma dout / sqrt(var + eps)``; with the batch's own, two more terms,
through the mean and through the variance::

    dx = gamma / sqrt(var + eps) * (dout - mean(dout) - x_hat * mean(dout * x_hat))
"""
from .. import init
from ..errors import ShapeError
from . import functional
from .module import Module, check_setting


class BatchNorm2d(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        name = "BatchNorm2d"
        self.num_features = check_setting(name, "num_features", num_features)
        self.eps = check_setting(name, "eps", eps)
        self.momentum = check_setting(name, "momentum", momentum)
        C = self.num_features
        self.register_parameter("weight", init.ones(C))
        self.register_parameter("bias", init.zeros(C))
        self.register_buffer("running_mean", init.zeros(C))
        self.register_buffer("running_var", init.ones(C))
        self.register_buffer("num_batches_tracked", init.zeros((), dtype="int64"))

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)", channels=self.num_features)
        gamma, beta = self.params["weight"], self.params["bias"]
        if self.training:
            M = x.size // x.shape[1]
            if M < 2:
                raise ShapeError(f"{self.label()}: training needs more than one value per "
                                 f"channel to take a variance, got shape {tuple(x.shape)}")
            mean, var = functional.batch_statistics(x)
            m, b = self.momentum, self.buffers
            # In place, on the device: no value is read back to the host.
            b["running_mean"] *= 1 - m
            b["running_mean"] += (m * mean).astype(b["running_mean"].dtype, copy=False)
            b["running_var"] *= 1 - m
            b["running_var"] += (m * M / (M - 1) * var).astype(b["running_var"].dtype, copy=False)
            b["num_batches_tracked"] += 1
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self._save(x.shape, x, mean, var, self.training)
        return functional.batchnorm_forward(x, gamma, beta, mean, var, self.eps)

    def backward(self, dout):
        x, mean, var, batch_stats = self._saved(dout)
        dx, dgamma, dbeta = functional.batchnorm_backward(
            dout, x, self.params["weight"], mean, var, self.eps, batch_stats)
        self.grads["weight"][...] = dgamma
        self.grads["bias"][...] = dbeta
        return dx
