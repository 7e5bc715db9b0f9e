"""The paper's two towers as state: a one-process grouped AlexNet split in halves, and joined.

Krizhevsky et al. trained AlexNet on two GPUs (their Figure 2): each GPU held
half of the kernels of conv1-conv5 and half of the neurons of fc6-fc8, and the
GPUs exchanged activations only at certain layers.  In one process
``groups=2`` gives the same connectivity (``models/alexnet.py``); this file maps
that one-process state to the two towers and back.  The forward and backward
passes of the towers, with their exchanges, are in ``model_parallel.py``.

Which half goes where.  Every weight is in PyTorch's layout, output first::

    Conv2d  weight (F, C/G, kh, kw), bias (F,)      Linear  weight (out, in), bias (out,)

and tower t holds the output channels (rows) ``t*F/2 .. (t+1)*F/2`` of every
layer, so splitting and joining are the same cut along axis 0 for every array:

    layer   one process          tower t holds                 its input columns
    conv1   (96, 3, 11, 11)      rows t*48 ..  (48, 3, 11, 11)   all 3: the image, on both
    conv2   (256, 48, 5, 5) g2   rows t*128 .. (128, 48, 5, 5)   its own 48 (group t = tower t)
    conv3   (384, 256, 3, 3)     rows t*192 .. (192, 256, 3, 3)  all 256: [tower 0's | tower 1's]
    conv4   (384, 192, 3, 3) g2  rows t*192 .. (192, 192, 3, 3)  its own 192
    conv5   (256, 192, 3, 3) g2  rows t*128 .. (128, 192, 3, 3)  its own 192
    fc6     (4096, 9216)         rows t*2048 .. (2048, 9216)     all 9216: [tower 0's | tower 1's]
    fc7     (4096, 4096)         rows t*2048 .. (2048, 4096)     all 4096
    fc8     (1000, 4096)         rows t*500 ..  (500, 4096)      all 4096

Why the grouped layers need no other cut: with G = 2, a grouped layer's output
channels ``0 .. F/2`` are exactly those that read input group 0 (the first C/2
channels), which is tower 0's half of the layer below.  A layer without groups
(conv3, fc6-fc8) keeps all its input columns on both towers, in the order
tower 0's then tower 1's: the order in which the exchange (an all-gather along
axis 1) lays the two halves side by side.  For fc6 that order is the flatten
of (256, 6, 6): channel-major, so tower 0's channels 0..127 are columns
0..4607.

The optimizer's state (SGD's velocity, Adam's m and v) has the parameters'
shapes, so the same cut splits and joins it.
"""
from ..backend import get_array_module
from ..errors import ConfigError
from ..layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                      ZeroPad2d)

TOWERS = 2       # the paper's two GPUs; the cut below would serve more, the exchanges not

# The layers a tower may hold: the others (BatchNorm2d's batch statistics, ...) would need
# exchanges of their own.
_KNOWN = (Conv2d, Linear, ReLU, LocalResponseNorm, MaxPool2d, ZeroPad2d, Flatten, Dropout)


def check_towers(model, name="model"):
    """Refuse, in one line, a model that has no two towers: one without a ``groups=2``
    convolution (e.g. alexnet32), one with other groups, an odd number of channels, or a
    layer the towers do not know."""
    grouped = False
    for layer_name, layer in model.layers.items():
        if not isinstance(layer, _KNOWN):
            known = ", ".join(k.__name__ for k in _KNOWN)
            raise ConfigError(f"--model-parallel: {name} has a {type(layer).__name__} "
                              f"({layer_name!r}); the towers hold only {known}")
        if isinstance(layer, Conv2d):
            if layer.groups not in (1, TOWERS):
                raise ConfigError(f"--model-parallel: {name}'s {layer_name} has groups="
                                  f"{layer.groups}; the two towers need 1 or 2")
            grouped = grouped or layer.groups == TOWERS
            width = layer.out_channels
        elif isinstance(layer, Linear):
            width = layer.out_features
        else:
            continue
        if width % TOWERS:
            raise ConfigError(f"--model-parallel: {name}'s {layer_name} has {width} outputs, "
                              f"which do not split in {TOWERS} towers")
    if not grouped:
        raise ConfigError(f"--model-parallel: {name} has no towers (no groups=2 layer); use "
                          "alexnet or alexnet_small")


def tower_rows(n, tower, towers=TOWERS):
    """The slice of ``n`` outputs (channels, rows) that tower ``tower`` holds."""
    half = n // towers
    return slice(tower * half, (tower + 1) * half)


def split_state(state, towers=TOWERS):
    """``{name: array}`` of the one-process model (weights, or the optimizer's state with the
    weights' shapes) -> one dict per tower, each array cut along axis 0 (views, not copies).

        state["fc6.weight"] (4096, 9216)  ->  [ (2048, 9216) rows 0..2047, rows 2048..4095 ]
    """
    halves = [dict() for _ in range(towers)]
    for name, a in state.items():
        if a.ndim == 0 or a.shape[0] % towers:
            raise ConfigError(f"split_state: {name!r} has shape {tuple(a.shape)}; axis 0 must "
                              f"split in {towers}")
        for t in range(towers):
            halves[t][name] = a[tower_rows(a.shape[0], t, towers)]
    return halves


def join_state(halves):
    """The inverse of :func:`split_state`: one dict per tower -> the one-process dict, each
    array the towers' pieces stacked along axis 0 (tower 0's rows first)."""
    names = list(halves[0])
    for t, h in enumerate(halves[1:], 1):
        if list(h) != names:
            raise ConfigError(f"join_state: tower {t} holds {sorted(h)}, tower 0 {sorted(names)}")
    joined = {}
    for name in names:
        xp = get_array_module(halves[0][name])
        joined[name] = xp.concatenate([h[name] for h in halves], axis=0)
    return joined
