"""metrics.py against counts made here: evaluate's ten crops average probabilities and
switch dropout off; the running meter's sums equal float64 sums made here, however often
it is read.

An untrained model cannot tell the evaluate cases apart (its views all answer alike,
its dropout changes little), so each test builds a case where the wrong way gives
another answer, and counts the right one by hand.
"""
import numpy as np
import pytest

from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.layers import Dropout
from tinyalexnet.metrics import RunningMeter, evaluate
from tinyalexnet.models import get_model
from tinyalexnet.transforms import Pipeline


class CornerDetector:
    """A stand-in model whose answer for a view depends on one thing: whether the view
    holds a bright pixel (a confident class 0, logits (8, 0)) or not (a mild class 1,
    logits (0, 1))."""

    xp, training, check_finite = np, False, True

    def named_modules(self):
        return [("", self)]

    def eval(self):
        return self.train(False)

    def train(self, mode=True):
        self.training = mode
        return self

    def forward(self, x):
        bright = x.reshape(len(x), -1).max(axis=1) > 0
        return np.where(bright[:, None], [8.0, 0.0], [0.0, 1.0]).astype(np.float32)


def softmax(z):
    e = np.exp(np.asarray(z, np.float64) - np.max(z))
    return e / e.sum()


def test_ten_crop_averages_probabilities_not_logits():
    # 36x36 images cut into 32x32 views: a bright top-left pixel is in 2 of the 10 views
    # (the top-left crop and its reflection), so 2 views say class 0 at 99.97% and 8 say
    # class 1 at 73%.
    images = np.zeros((4, 1, 36, 36), np.uint8)
    images[:2, 0, 0, 0] = 255
    labels = np.ones(4, np.int64)
    pipe = Pipeline((1, 36, 36), (1, 32, 32), mean=[0.5], std=[0.25])
    views_with_the_pixel = [(v.max() > 0) for v in pipe.ten_crop(images[:1])[:, 0]]
    assert sum(views_with_the_pixel) == 2
    # Averaged probabilities: class 1 (0.585).  Averaged logits (1.6, 0.8) or
    # log-probabilities would pick class 0 for both images with the pixel.
    p_corner = (2 * softmax([8, 0]) + 8 * softmax([0, 1])) / 10
    assert p_corner.argmax() == 1 and np.mean([[8, 0]] * 2 + [[0, 1]] * 8, axis=0).argmax() == 0
    result = evaluate(CornerDetector(), ArrayDataset(images, labels, ["a", "b"]), pipe,
                      batch_size=3, ten_crop=True)
    assert result["top1_error"] == 0.0
    expected_loss = -(2 * np.log(p_corner[1]) + 2 * np.log(softmax([0, 1])[1])) / 4
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert result["confusion"].tolist() == [[0, 0], [0, 4]]


def test_evaluate_switches_dropout_off_and_gives_the_mode_back():
    model = get_model("alexnet_small", num_classes=10, in_channels=1, seed=5)
    for name in ("drop6", "drop7"):       # at p = 0.9 dropout changes most answers
        model[name].p = 0.9
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 1, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 24)
    pipe = Pipeline((1, 28, 28), model.input_shape, mean=[0.5], std=[0.3])
    model.train()
    result = evaluate(model, ArrayDataset(images, labels, [str(k) for k in range(10)]), pipe,
                      batch_size=10)
    assert model.training and all(m.training for _, m in model.named_modules())
    # The count here: every layer but Dropout, one after the other.
    x = pipe(images, train=False)
    assert any(isinstance(layer, Dropout) for layer in model)
    for layer in model:
        if not isinstance(layer, Dropout):
            x = layer.forward(x)
    z = x.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-logp[np.arange(24), labels].mean(), rel=1e-5)
    assert result["top1_error"] == pytest.approx(np.mean(logp.argmax(axis=1) != labels))


# ----------------------------------------------------------------------------- the running meter

K = 7


def steps(n, seed, bad=()):
    """n steps of (step, loss, logits, labels); the losses at ``bad`` are NaN or infinite."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(n):
        B = int(rng.integers(1, 9))
        logits = rng.standard_normal((B, K)).astype(np.float32)     # no ties
        loss = np.float32(rng.random() * 3)
        if step in bad:
            loss = np.float32(np.nan if step % 2 else np.inf)
        out.append((step, loss, logits, rng.integers(0, K, B)))
    return out


def by_hand(data):
    loss_sum, c1, c5, count = 0.0, 0, 0, 0
    for _, loss, logits, labels in data:
        n = len(labels)
        loss_sum += float(loss) * n
        true = logits[np.arange(n), labels]
        rank = 1 + (logits > true[:, None]).sum(axis=1)
        c1, c5, count = c1 + int((rank <= 1).sum()), c5 + int((rank <= 5).sum()), count + n
    return loss_sum, c1, c5, count


@pytest.mark.parametrize("read_every", [1, 3, 1000])
def test_the_sums_are_the_same_however_often_they_are_read(xp, read_every):
    """150 steps (the device rows grow from 64 twice): the sums are those made here, to
    the last bit, whether read every step, every third or once."""
    data = steps(150, 0)
    meter = RunningMeter(xp)
    for step, loss, logits, labels in data:
        meter.add(xp.asarray(loss), xp.asarray(logits), xp.asarray(labels), step)
        if (step + 1) % read_every == 0:
            meter.read()
    got = meter.read()
    loss_sum, c1, c5, count = by_hand(data)
    assert (got["loss_sum"], got["correct1"], got["correct5"], got["count"]) == \
        (loss_sum, c1, c5, count)
    assert got["loss"] == loss_sum / count and got["first_bad"] is None


@pytest.mark.parametrize("read_every", [1, 4, 1000])
def test_the_first_non_finite_loss_is_named_whenever_it_is_read(xp, read_every):
    data = steps(100, 1, bad=(70, 71, 95))
    meter = RunningMeter(xp)
    for step, loss, logits, labels in data:
        meter.add(xp.asarray(loss), xp.asarray(logits), xp.asarray(labels), 1000 + step)
        if (step + 1) % read_every == 0:
            meter.read()
    assert meter.read()["first_bad"] == 1070


def test_a_meter_continues_from_the_partial_sums_of_a_checkpoint(xp):
    data = steps(20, 2)
    whole = RunningMeter(xp)
    for step, loss, logits, labels in data:
        whole.add(xp.asarray(loss), xp.asarray(logits), xp.asarray(labels), step)
    first = RunningMeter(xp)
    for step, loss, logits, labels in data[:8]:
        first.add(xp.asarray(loss), xp.asarray(logits), xp.asarray(labels), step)
    second = RunningMeter(xp, first.state())
    for step, loss, logits, labels in data[8:]:
        second.add(xp.asarray(loss), xp.asarray(logits), xp.asarray(labels), step)
    a, b = whole.read(), second.read()
    assert [a[k] for k in ("loss_sum", "correct1", "correct5", "count")] == \
        [b[k] for k in ("loss_sum", "correct1", "correct5", "count")]
