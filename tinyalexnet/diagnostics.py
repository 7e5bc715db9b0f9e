"""Looking inside a network: what each layer outputs, which ReLUs have died, how far
the weights moved, and which input pixels a prediction depends on.

Lessons 11 and 12 use these; each works on NumPy and CuPy alike::

    outs = layer_outputs(model, x, until="relu7")    # {"conv1": ..., ..., "relu7": ...}
    dead_units(model, x)                              # {"relu1": 0.0, ..., "relu7": 0.03}
    relative_change(before, after)                    # {"conv1.weight": 0.07, ...}
    input_gradient(model, x, classes)                 # d score[class] / d x, like x
    occlusion(model, x, classes, size=8, stride=2)    # p[class] with a patch covered
    lr_range_test(step, low=1e-5, high=1.0)           # the loss as the learning rate grows

A **dead** ReLU unit outputs 0 for every input it is shown, so it passes back no
gradient and its weights never change again.  For a convolution the unit is a
channel (one kernel, shared by every position): it is dead when its map is 0
everywhere, for every image.

The **saliency map** of Simonyan, Vedaldi and Zisserman (2014) is
|d score[class] / d x|: the pixels whose small change would move the class's
score most.  It costs one backward pass, run past the first layer to the input.
"""
from collections import OrderedDict

from .backend import get_array_module
from .errors import ConfigError, ShapeError
from .layers import ReLU


def layer_outputs(model, x, until=None):
    """Run ``x`` through a Sequential ``model``, keeping every layer's output.

    Returns an OrderedDict ``{layer name: output}`` in order, stopping after the
    layer named ``until`` (all layers if None).  The outputs are the arrays the
    layers return (not copies).
    """
    if until is not None and until not in model.layers:
        raise ConfigError(f"layer_outputs: the model has no layer {until!r} "
                          f"(it has {', '.join(model.layers)})")
    outputs = OrderedDict()
    for name, layer in model.layers.items():
        x = layer.forward(x)
        outputs[name] = x
        if name == until:
            break
    return outputs


def dead_units(model, x):
    """``{ReLU layer name: fraction of its units that output 0 for every image of x}``.

    A unit is a channel of a (N, C, H, W) output, a feature of a (N, F) one.
    """
    fractions = OrderedDict()
    for name, out in layer_outputs(model, x).items():
        if isinstance(model.layers[name], ReLU):
            axes = (0,) + tuple(range(2, out.ndim))     # all but the unit axis
            fractions[name] = float((out.max(axis=axes) <= 0).mean())
    return fractions


def relative_change(before, after):
    """``{name: |after - before| / |before|}`` (Frobenius norms) for two state dicts,
    e.g. a copy taken before a step (or before training) and the model now."""
    change = OrderedDict()
    for name, old in before.items():
        xp = get_array_module(old)
        new = after[name]
        size = float(xp.sqrt((old.astype("float64") ** 2).sum()))
        moved = float(xp.sqrt(((new.astype("float64") - old) ** 2).sum()))
        change[name] = moved / size if size > 0 else float("inf") if moved > 0 else 0.0
    return change


def input_gradient(model, x, classes):
    """d score[n, classes[n]] / d x[n] for every image n of the batch: an array like x.

    The score is the logit (before the softmax), as in the saliency maps of
    Simonyan et al.  The models' first convolution skips its input gradient
    (``input_grad = False``: nothing upstream needs it during training); it is
    switched on for this one pass and restored.  Leaves the model's mode as it
    is: call ``model.eval()`` first to see the network without dropout.
    """
    xp = get_array_module(x)
    if len(classes) != x.shape[0]:
        raise ShapeError(f"input_gradient: {x.shape[0]} images but {len(classes)} classes")
    layers = [m for _, m in model.named_modules() if hasattr(m, "input_grad")]
    saved = [m.input_grad for m in layers]
    try:
        for m in layers:
            m.input_grad = True
        scores = model.forward(x)
        dout = xp.zeros_like(scores)
        dout[xp.arange(scores.shape[0]), xp.asarray(classes)] = 1
        return model.backward(dout)
    finally:
        for m, flag in zip(layers, saved):
            m.input_grad = flag


def occlusion(model, x, classes, size=8, stride=2, fill=0.0, batch_size=256):
    """The probability of ``classes[n]`` when a ``size`` x ``size`` square of image
    ``x[n]`` is covered with ``fill``, for every position of the square on a grid
    of ``stride``: an array (N, rows, cols), as in Zeiler and Fergus (2014).

    Where covering the square makes the probability fall, the network was using
    what it hid.  ``fill`` is the value of a blank pixel *after* the input
    pipeline (for Fashion-MNIST, what a black pixel becomes).
    """
    xp = get_array_module(x)
    n, _, height, width = x.shape
    if len(classes) != n:
        raise ShapeError(f"occlusion: {n} images but {len(classes)} classes")
    if not 1 <= size <= min(height, width) or stride < 1:
        raise ConfigError(f"occlusion: the square must fit the {height}x{width} images and the "
                          f"stride be >= 1, got size {size}, stride {stride}")
    tops = list(range(0, height - size + 1, stride))
    lefts = list(range(0, width - size + 1, stride))
    positions = [(t, l) for t in tops for l in lefts]
    classes = [int(c) for c in classes]
    result = xp.zeros((n, len(positions)), dtype="float64")
    for i in range(n):
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            batch = xp.repeat(x[i:i + 1], len(chunk), axis=0)
            for k, (t, l) in enumerate(chunk):
                batch[k, :, t:t + size, l:l + size] = fill
            scores = model.forward(batch).astype("float64")
            scores = scores - scores.max(axis=1, keepdims=True)
            p = xp.exp(scores)
            p /= p.sum(axis=1, keepdims=True)
            result[i, start:start + len(chunk)] = p[:, classes[i]]
    return result.reshape(n, len(tops), len(lefts))


def lr_range_test(step, low=1e-5, high=1.0, steps=100, explode=4.0):
    """The learning-rate range test (L. Smith, 2017): ``(rates, losses)``.

    ``step(lr)`` takes one training step at learning rate ``lr`` and returns that
    step's loss (a number).  The rate starts at ``low`` and is multiplied by the
    same factor at every step, to reach ``high`` at step ``steps - 1``; the test
    stops early, after recording it, at the first loss that is not finite or is
    more than ``explode`` times the lowest loss so far.  Plain Python, so that it
    is also the reference solution of lesson 12's exercise.
    """
    factor = (high / low) ** (1 / (steps - 1))
    rates, losses = [], []
    for k in range(steps):
        rate = low * factor ** k
        loss = float(step(rate))
        rates.append(rate)
        losses.append(loss)
        if not (abs(loss) < float("inf")) or loss > explode * min(losses):   # NaN fails `<`
            break
    return rates, losses


__all__ = ["layer_outputs", "dead_units", "relative_change", "input_gradient", "occlusion",
           "lr_range_test"]
