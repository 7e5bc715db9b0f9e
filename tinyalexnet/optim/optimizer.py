"""What every optimizer shares: the model it updates and per-parameter state by name.

An optimizer holds the *model*, not a list of arrays, and looks its parameters
up by name at every step; so ``model.to_gpu()`` after building the optimizer
is fine, and the state (``"velocity"`` for SGD, ``"m"``/``"v"`` for Adam) is
saved and restored by parameter name, like everything in a checkpoint.

Each optimizer writes its rule once, ``update(p, g, state)``, for arrays of any
shape.  A model moved with ``to()`` keeps all its parameters in one flat buffer
and all its gradients in another (``Module.flatten_parameters``); ``step`` then
updates the whole model with one ``update`` over the flat buffers, its state in
flat buffers of its own whose pieces are the per-name arrays of ``state``: a
handful of array operations in all instead of a handful per parameter, the
difference that counts on a GPU, where each is a kernel launch.  A model without
flat buffers is updated one parameter at a time, by the same ``update``.
"""
import math

from .. import backend
from ..errors import CheckpointError
from ..settings import check_setting


class Optimizer:
    slots = ()  # names of the per-parameter state arrays

    def __init__(self, model, lr):
        self.model, self.lr = model, check_setting(type(self).__name__, "lr", lr)
        self.state = {slot: {} for slot in self.slots}   # slot -> {param name: array}
        self.steps = 0
        # Device scalars a replayed CUDA graph reads (graph.py): the learning rate (float64)
        # and the coming step's number (int64); None: the host's numbers above
        self.lr_device = self.step_device = None
        self._flat_state = {}    # (slot, layout) -> (flat array, its views in self.state)

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
        """Update every parameter from its gradient: at once over the model's flat buffers
        when it has them, else one parameter at a time."""
        self.steps += 1
        flat = getattr(self.model, "flat_buffers", None)
        buffers = flat() if flat is not None else None
        if buffers is None:
            for name, p, g in self.model.named_parameters():
                self.update(p, g, {slot: self._slot(slot, name, p) for slot in self.slots})
            return
        for buffer in buffers:
            self.update(buffer.params, buffer.grads,
                        {slot: self._flat_slot(slot, buffer) for slot in self.slots})

    def update(self, p, g, state):
        """The rule: change ``p`` in place from its gradient ``g``; ``state`` maps each slot
        to this optimizer's array for ``p`` (all of one shape: one parameter, or a flat
        buffer of all of them)."""
        raise NotImplementedError

    def _flat_slot(self, slot, buffer):
        """The state ``slot`` of a flat buffer, as one flat array whose pieces are the arrays
        of ``self.state[slot]``.  Made on first use (zeros, and the values of state already
        there, say from a checkpoint), again if those arrays were replaced since."""
        store = self.state[slot]
        key = (slot, buffer.layout)
        flat, views = self._flat_state.get(key, (None, ()))
        if (flat is None or backend.backend_of(flat) != backend.backend_of(buffer.params)
                or flat.dtype != buffer.params.dtype
                or any(store.get(name) is not view
                       for (name, _, _), view in zip(buffer.layout, views))):
            xp = backend.get_array_module(buffer.params)
            flat = xp.zeros(buffer.params.shape, dtype=buffer.params.dtype)
            views = []
            for name, offset, shape in buffer.layout:
                piece = flat[offset:offset + math.prod(shape)].reshape(shape)
                old = store.get(name)
                if old is not None:
                    piece[...] = backend.to_backend(old, backend.backend_of(flat)).astype(
                        flat.dtype, copy=False)
                store[name] = piece
                views.append(piece)
            self._flat_state[key] = (flat, tuple(views))
        return flat

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
