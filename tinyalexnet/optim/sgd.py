"""SGD with momentum and weight decay, exactly as the paper writes it (section 5)::

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

with momentum 0.9, weight decay 0.0005 and batch 128 in the paper.  "This small
amount of weight decay ... reduces the model's training error", the paper notes:
it is part of the optimisation, not only a regulariser.

PyTorch's ``torch.optim.SGD`` folds the learning rate in differently
(v <- m v + g + wd w;  w <- w - lr v); the two agree while lr is constant.

``fused=True`` runs the update as one GPU kernel (fused.py: one launch for the
whole model when it has flat buffers; on NumPy it changes nothing); the array
code below is its reference.
"""
from ..settings import check_setting
from . import fused as fused_kernels
from .optimizer import Optimizer


class SGD(Optimizer):
    slots = ("velocity",)

    def __init__(self, model, lr=0.01, momentum=0.9, weight_decay=0.0005, fused=False):
        super().__init__(model, lr)
        self.momentum = check_setting("SGD", "momentum", momentum)
        self.weight_decay = check_setting("SGD", "weight_decay", weight_decay)
        self.fused = fused

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def update(self, p, g, state):
        v = state["velocity"]
        lr = self.lr if self.lr_device is None else self.lr_device    # graph.py: on the device
        if self.fused and fused_kernels.sgd_update(p, g, v, lr=lr, momentum=self.momentum,
                                                   weight_decay=self.weight_decay):
            return
        v *= self.momentum
        if self.weight_decay:
            v -= (self.weight_decay * self.lr) * p
        v -= self.lr * g
        p += v
