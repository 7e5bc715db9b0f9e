"""Dropout: at training time, zero each activation with probability p.

The paper sets p = 0.5 in fc6 and fc7: "the neurons which are dropped out do
not contribute to the forward pass and do not participate in back-propagation.
So every time an input is presented, the neural network samples a different
architecture, but all these architectures share weights."

At test time the paper multiplies the outputs by 0.5.  We use the equivalent
"inverted" form: survivors are scaled by 1 / (1 - p) during training, so that
evaluation is the identity and no layer needs to know the training p later::

    train:  y = x * m / (1 - p),   m[i] ~ Bernoulli(1 - p)     backward: dx = dout * m / (1 - p)
    eval:   y = x                                               backward: dx = dout

Shapes: any -> same.  The maths: ``functional.dropout_forward`` / ``dropout_backward``.
Masks come from ``tinyalexnet.rng``: mask number t of a
layer is a pure function of (seed, t), so runs are reproducible and resumable,
and the CPU and GPU draw identical masks.  By default (``fast = True``) the layer
runs ``fast.py``'s version: on a GPU one kernel draws the mask and applies it
(``kernels/dropout.py``), with the same bits; elsewhere the same array code.
"""
from ..backend import get_array_module
from ..errors import CheckpointError, StateError
from .. import rng
from . import fast, functional
from .module import Module, check_setting


class Dropout(Module):
    def __init__(self, p=0.5, seed=0):
        super().__init__()
        self.p = check_setting("Dropout", "p", p)
        self.seed = check_setting("Dropout", "seed", seed)
        self.calls = 0  # how many masks this layer has drawn
        # The number, in the whole batch, of this process's first image: 0 alone; under data
        # parallelism (parallel/data.py) a process holding images 64..127 of a batch of 128
        # draws, with 64, the mask bits one process holding all 128 draws for them.
        self.first_image = 0
        # graph.py: a 1-element int64 device array holding ``calls``, which a replayed CUDA
        # graph advances (the kernel reads it); None: the host's count
        self.counter = None
        self.fast = True        # fast.py's version (one kernel on a GPU) or functional.py's

    def extra_repr(self):
        return f"p={self.p}"

    def get_extra_state(self):
        return {"seed": self.seed, "calls": self.calls}

    def set_extra_state(self, state):
        if not {"seed", "calls"} <= set(state):
            raise CheckpointError(f"{self.label()}: extra state needs 'seed' and 'calls', "
                                  f"got keys {sorted(state)}")
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def forward(self, x):
        self._check_input(x)
        if not self.training or self.p == 0.0:
            self._save(x.shape, None)
            return x
        offset = self.first_image * (x.size // max(x.shape[0], 1))   # elements before ours
        if self.fast:
            counter = self.calls if self.counter is None else self.counter
            out, keep = fast.dropout_forward(x, self.p, self.seed, counter, offset)
        else:
            if self.counter is not None:
                raise StateError(f"{self.label()}: the readable path (fast=False) draws its "
                                 "mask from the host's counter, not the device's")
            xp = get_array_module(x)
            u = rng.uniform(xp, x.shape, self.seed, self.calls, dtype=x.dtype, offset=offset)
            keep = u >= self.p              # each unit survives with probability 1 - p
            out = functional.dropout_forward(x, keep, self.p)
        self.calls += 1
        self._save(x.shape, keep)
        return out

    def backward(self, dout):
        (keep,) = self._saved(dout)
        if keep is None:
            return dout
        if self.fast:
            return fast.dropout_backward(dout, keep, self.p)
        return functional.dropout_backward(dout, keep, self.p)
