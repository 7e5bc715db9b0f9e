"""What every optimizer shares: the model it updates and per-parameter state by name.

An optimizer holds the *model*, not a list of arrays, and looks its parameters
up by name at every step; so ``model.to_gpu()`` after building the optimizer
is fine, and the state (``"velocity"`` for SGD, ``"m"``/``"v"`` for Adam) is
saved and restored by parameter name, like everything in a checkpoint.
"""
from .. import backend
from ..errors import CheckpointError
from ..settings import check_setting


class Optimizer:
    slots = ()  # names of the per-parameter state arrays

    def __init__(self, model, lr):
        self.model, self.lr = model, check_setting(type(self).__name__, "lr", lr)
        self.state = {slot: {} for slot in self.slots}   # slot -> {param name: array}
        self.steps = 0

    def hyperparameters(self):
        return {"lr": self.lr}

    def _slot(self, slot, name, p):
        """The state array ``slot`` of parameter ``name``, created as zeros on first use.

        If the model moved (``to_gpu()``, ``to(dtype=...)``) since the last step, the
        state follows it to the parameter's backend and dtype.
        """
        store = self.state[slot]
        a = store.get(name)
        if a is None:
            a = store[name] = backend.get_array_module(p).zeros_like(p)
        elif backend.get_array_module(a) is not backend.get_array_module(p) or a.dtype != p.dtype:
            a = store[name] = backend.to_backend(a, backend.backend_of(p)).astype(p.dtype)
        return a

    def step(self):
        self.steps += 1
        for name, p, g in self.model.named_parameters():
            self.update(name, p, g)

    def update(self, name, p, g):
        raise NotImplementedError

    def state_dict(self):
        """``{"hyper": {...numbers...}, "steps": int, "state": {"slot/param": array}}``."""
        arrays = {f"{slot}/{name}": a for slot, store in self.state.items() for name, a in store.items()}
        return {"hyper": self.hyperparameters(), "steps": self.steps, "state": arrays}

    def load_state_dict(self, sd):
        for key, value in sd["hyper"].items():
            setattr(self, key, value)
        self.steps = int(sd["steps"])
        params = {name: p for name, p, _ in self.model.named_parameters()}
        self.state = {slot: {} for slot in self.slots}
        for key, a in sd["state"].items():
            slot, _, name = key.partition("/")
            if slot not in self.state or name not in params:
                raise CheckpointError(f"{type(self).__name__}: optimizer state {key!r} does not "
                                      "match this model")
            if tuple(a.shape) != tuple(params[name].shape):
                raise CheckpointError(f"{type(self).__name__}: optimizer state {key!r} has shape "
                                      f"{tuple(a.shape)}, parameter has {tuple(params[name].shape)}")
            p = params[name]
            self.state[slot][name] = backend.to_backend(a, backend.backend_of(p)).astype(p.dtype)
        return self
