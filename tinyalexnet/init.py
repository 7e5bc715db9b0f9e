"""Weight initialisation: how a layer's numbers are drawn before training.

Weights are drawn on the host with a NumPy ``Generator`` (so a seed gives the
same network on the CPU and the GPU) and moved to the device afterwards.  This
file is where parameters are made: layers call ``he_normal`` and ``zeros`` here
and never touch NumPy themselves.

A layer built on its own draws He weights (below) from the ``rng`` it is given.
The model builders instead build their layers with ``draw=False`` (weights left
at zero) and call ``init_model``, which draws every weight once, in layer order,
from one Generator seeded by ``seed``.

Two schemes are offered for whole models (see ``tinyalexnet.models``):

* ``"paper"``: every weight from N(0, 0.01^2); biases 1 in conv2, conv4, conv5,
  fc6 and fc7 ("this initialization accelerates the early stages of learning
  by providing the ReLUs with positive inputs"), 0 elsewhere.
* ``"he"``: weights from N(0, 2 / fan_in) (He et al., 2015), biases 0.  It keeps
  the variance of activations roughly constant through ReLU layers, which lets
  deep nets start learning without the paper's hand-tuned constants.  Except
  the classifier (the last layer, fc8): see below.

The classifier under ``"he"``.  He's rule keeps the *size* of activations,
which is right for hidden layers and wrong for the logits: there it gives
scores of about the size of the features, so a freshly drawn network is
confidently wrong and its first loss is far above log K: 3.6 to 5.2 instead
of 2.30 for the small model at 10 classes in training mode, where dropout
scales the surviving fc7 units by 2, and 2.5 to 3.2 in evaluation mode (seeds
0-2).  Lesson 2 teaches that a first loss far from log K means something is
off.  So the classifier is drawn from N(0, 0.01^2) (the paper's constant,
``CLASSIFIER_STD``): the logits start near 0, every class near 1/K, and the
first loss near log K.  Its gradient is not small (the features times
p - onehot), so it learns at once: the README's main job ended at 83.2%, 83.8%
and 82.9% test accuracy (seeds 0, 1, 2) against 82.1%, 81.8% and 82.8% with
He's rule on the classifier.  The same random numbers are drawn as before, so
every other layer starts exactly as it did.
"""
import math

from .backend import numpy as np
from .errors import ConfigError

# The layers the paper starts with bias 1 (section 5 of the paper).
PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")
# The std of the classifier's weights under "he" (see the module docstring).
CLASSIFIER_STD = 0.01


def default_rng(rng=None):
    """A NumPy Generator: ``rng`` itself, one seeded by an int, or a fresh one."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def zeros(shape, dtype="float32"):
    """Zeros on the host: biases, gradients, and weights that ``init_model`` fills later."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    """Ones on the host: a normalisation layer's scale, which starts as the identity."""
    return np.ones(shape, dtype=dtype)


def normal(shape, std, rng, dtype="float32"):
    return (rng.standard_normal(shape) * std).astype(dtype)


def he_normal(shape, fan_in, rng, dtype="float32"):
    return normal(shape, math.sqrt(2.0 / fan_in), rng, dtype)


def init_model(model, scheme="he", seed=0):
    """Re-draw every weight and bias of ``model`` with ``scheme`` ("paper" or "he").

    Layers are visited in order, each drawing from one Generator seeded by
    ``seed``, so the same seed always gives the same network.  Under "he" the
    last layer with weights, the classifier, gets ``CLASSIFIER_STD``.
    """
    if scheme not in ("paper", "he"):
        raise ConfigError(f"unknown init scheme {scheme!r}: expected 'paper' or 'he'")
    rng = default_rng(seed)
    # A normalisation layer's weight is a per-channel scale (1-d), not a weight to draw: it
    # starts at 1 and its bias at 0, as the layer made them.
    weighted = [name for name, layer in model.named_modules()
                if "weight" in layer.params and layer.params["weight"].ndim > 1]
    classifier = weighted[-1] if weighted else None
    for name, layer in model.named_modules():
        if name not in weighted:
            continue
        w = layer.params["weight"]
        fan_in = int(w.size // w.shape[0])
        if scheme == "paper":
            new_w = normal(w.shape, 0.01, rng)
            bias = 1.0 if name.split(".")[-1] in PAPER_BIAS_ONE else 0.0
        elif name == classifier:
            new_w = normal(w.shape, CLASSIFIER_STD, rng)     # logits near 0: first loss ~ log K
            bias = 0.0
        else:
            new_w = he_normal(w.shape, fan_in, rng)
            bias = 0.0
        layer.load_state_dict({"weight": new_w, "bias": np.full(layer.params["bias"].shape, bias)})
    return model
