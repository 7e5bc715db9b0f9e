"""Sequential: layers applied one after the other, and backward in reverse.

    forward:   x -> layer_1 -> layer_2 -> ... -> layer_L -> out
    backward:  dx <- layer_1.backward <- ... <- layer_L.backward <- dout

Layers are named ("conv1", "relu1", ...) so that parameters get names like
``conv1.weight``, as in a PyTorch ``state_dict``.
"""
from collections import OrderedDict

from ..errors import CheckpointError, ShapeError
from .module import Module


class Sequential(Module):
    """``Sequential(layer, layer, ...)`` (named "0", "1", ...) or
    ``Sequential([("conv1", Conv2d(...)), ("relu1", ReLU()), ...])``."""

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple, OrderedDict)):
            items = layers[0].items() if isinstance(layers[0], OrderedDict) else layers[0]
        else:
            items = [(str(i), layer) for i, layer in enumerate(layers)]
        self.layers = OrderedDict()
        for name, layer in items:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: {name!r} is a {type(layer).__name__}, not a Module")
            layer.name = name
            self.layers[name] = layer

    def children(self):
        return iter(self.layers.items())

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.layers.values())[key]
        return self.layers[key]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers.values())

    def extra_repr(self):
        return "\n" + "\n".join(f"  ({name}): {layer!r}" for name, layer in self.layers.items()) + "\n"

    def forward(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return dout

    def output_shape(self, input_shape):
        for layer in self.layers.values():
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def macs(self, input_shape):
        total = 0
        for layer in self.layers.values():
            total += layer.macs(input_shape)
            input_shape = layer.output_shape(input_shape)
        return total

    def get_extra_state(self):
        states = {name: layer.get_extra_state() for name, layer in self.named_modules()
                  if layer is not self}
        return {name: s for name, s in states.items() if s is not None}

    def set_extra_state(self, state):
        modules = dict(self.named_modules())
        for name, s in state.items():
            if name not in modules or name == "":
                raise CheckpointError(f"{self.label()}: extra state for layer {name!r}, but the "
                                      f"model has no such layer (it has {', '.join(self.layers)})")
            modules[name].set_extra_state(s)

    def summary(self, input_shape=None):
        """A table like Keras' ``summary()``: each layer's output shape, parameters and
        multiply-adds per image, then the totals.  ``input_shape`` is (C, H, W); the
        models in ``tinyalexnet.models`` know their own (``model.input_shape``)."""
        if input_shape is None:
            input_shape = getattr(self, "input_shape", None)
            if input_shape is None:
                raise ShapeError(f"{self.label()}.summary: give the input shape (C, H, W); "
                                 "this Sequential does not know it")
        rows = [("layer", "type", "output shape", "params", "mult-adds")]
        shape = tuple(input_shape)
        rows.append(("input", "", "x".join(map(str, shape)), "", ""))
        total_params = total_macs = 0
        for name, layer in self.layers.items():
            macs = layer.macs(shape)
            shape = layer.output_shape(shape)
            params = layer.num_parameters()
            total_params += params
            total_macs += macs
            rows.append((name, type(layer).__name__, "x".join(map(str, shape)),
                         f"{params:,}" if params else "", f"{macs:,}" if macs else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            if k == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"Total parameters: {total_params:,}")
        lines.append(f"Multiply-adds per image (forward): {total_macs:,} "
                     f"({total_macs / 1e9:.3f} G)")
        return "\n".join(lines)
