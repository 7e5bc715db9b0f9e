"""Adam (Kingma & Ba, 2015): momentum plus a per-parameter step size.

A published PyTorch/TensorFlow comparison of AlexNet on CIFAR-10 trained with Adam,
lr 0.001 (the ``adam15`` recipe).  For gradient g at step t::

    m <- b1 m + (1 - b1) g            (running mean of g)
    v <- b2 v + (1 - b2) g^2          (running mean of g^2)
    w <- w - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

``weight_decay`` adds wd * w to g first (L2, as ``torch.optim.Adam`` does).
``fused=True`` runs the whole update as one GPU kernel (fused.py; on NumPy it
changes nothing): one launch for the whole model when it has flat buffers (see
optimizer.py); the array code below is its reference.
"""
from ..backend import get_array_module
from ..errors import ConfigError
from ..settings import check_setting
from . import fused as fused_kernels
from .optimizer import Optimizer


class Adam(Optimizer):
    slots = ("m", "v")

    def __init__(self, model, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 fused=False):
        super().__init__(model, lr)
        if len(betas) != 2:
            raise ConfigError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = check_setting("Adam", "beta1", betas[0])
        self.beta2 = check_setting("Adam", "beta2", betas[1])
        self.eps = check_setting("Adam", "eps", eps)
        self.weight_decay = check_setting("Adam", "weight_decay", weight_decay)
        self.fused = fused

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def update(self, p, g, state):
        xp = get_array_module(p)
        m, v = state["m"], state["v"]
        if self.fused and fused_kernels.adam_update(      # the one call of the fused kernel
                p, g, m, v, lr=self.lr if self.lr_device is None else self.lr_device,
                step=self.steps if self.step_device is None else self.step_device,
                beta1=self.beta1, beta2=self.beta2,
                eps=self.eps, weight_decay=self.weight_decay):
            return
        if self.weight_decay:
            g = g + self.weight_decay * p
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        t = self.steps
        m_hat = m / (1 - self.beta1 ** t)   # early steps: undo the pull of m, v towards 0
        v_hat = v / (1 - self.beta2 ** t)
        p -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)
