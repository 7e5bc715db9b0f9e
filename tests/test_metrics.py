"""The running meter against sums made here, in float64, however often it is read."""
import numpy as np
import pytest

from tinyalexnet.metrics import RunningMeter

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
