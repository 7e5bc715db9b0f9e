"""Learning at all: a tiny AlexNet-shaped network memorises a small batch.

If any backward pass, the loss or an optimizer were wrong, the loss would not
fall from log(4) ~ 1.39 to near zero on 16 random images with random labels.
"""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                                ReLU, Sequential, SoftmaxCrossEntropy)
from tinyalexnet.optim import SGD, Adam


def _tiny_model():
    return Sequential([
        ("conv1", Conv2d(1, 8, 3, padding=1, rng=0)), ("relu1", ReLU()),
        ("norm1", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool1", MaxPool2d(3, 2)),  # 12 -> 5
        ("conv2", Conv2d(8, 16, 3, padding=1, groups=2, rng=1)), ("relu2", ReLU()),
        ("pool2", MaxPool2d(3, 2)),                                                    # 5 -> 2
        ("flatten", Flatten()),
        ("fc6", Linear(16 * 2 * 2, 32, rng=2)), ("relu6", ReLU()), ("drop6", Dropout(0.1, seed=3)),
        ("fc7", Linear(32, 4, rng=4)),
    ])


@pytest.mark.parametrize("make_opt,steps", [
    (lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.0005), 150),
    (lambda m: Adam(m, lr=0.01), 150),
], ids=["sgd", "adam"])
def test_tiny_model_overfits_a_small_batch(xp, backend_name, make_opt, steps):
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((16, 1, 12, 12)), dtype="float32")
    labels = xp.asarray(rng.integers(0, 4, 16))
    model = _tiny_model().to(backend_name)
    opt = make_opt(model)
    loss = SoftmaxCrossEntropy()
    first = float(loss.forward(model.eval().forward(x), labels))
    model.train()
    for _ in range(steps):
        loss.forward(model.forward(x), labels)
        model.backward(loss.backward())
        opt.step()
    final = float(loss.forward(model.eval().forward(x), labels))
    assert first > 1.0                        # nothing memorised yet (chance: log 4 = 1.39)
    assert final < 0.05, (first, final)
    predicted = as_numpy(loss.probs).argmax(axis=1)
    np.testing.assert_array_equal(predicted, as_numpy(labels))
