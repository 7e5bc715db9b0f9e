"""Launches per training step: what one step asks of a GPU, counted on the CPU.

A small network's step on a GPU is bound by how many array operations the host
launches one after another, not by arithmetic.  The strict CuPy stand-in counts
them as CuPy would make them (``strict_cupy.count_launches``, its rules cited
from CuPy's source), with the device-to-host reads and host-to-device copies.

    python -m pytest tests/test_launch_budget.py -q -s

prints one line per model and the launches of each layer (forward, backward), the
weight update, the input pipeline, the loss and the running numbers; each model
has a budget a little above its count, so a change that adds launches fails here.
"""
import numpy as np
import pytest

from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.train import RunningMeter, Trainer, make_config


def images(n, side, seed=0, classes=10):
    """RGB uint8 images of one side (CIFAR-10's 32, or the paper's 256) and their labels."""
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, 3, side, side)).astype(np.uint8),
                        rng.integers(0, classes, n), [f"c{k}" for k in range(classes)],
                        name=f"rgb{side}")


def count_training_step(standin, tmp_path, model, batch, optimizer, side=32, augment=False,
                        lighting=False):
    """The launches, reads and copies of the Trainer's own step (pipeline, forward, loss,
    backward, update, running sums) in steady state: step 1 runs first (it makes the
    optimizer's state), step 2 is counted."""
    train = images(2 * batch, side)
    config = make_config(model=model, batch_size=batch, optimizer=optimizer, backend="cupy",
                         augment=augment, lighting=lighting, epochs=1, lr=0.01)
    trainer = Trainer(config, tmp_path, datasets=(train, train, train), progress=False, log=None)
    meter = RunningMeter(trainer.xp)
    trainer._train_step(0, np.arange(batch), meter)
    indices = np.arange(batch, 2 * batch)
    batch_bytes = sum(a.nbytes for a in train.get_batch(indices))
    with standin.count_launches() as launches:
        trainer._train_step(1, indices, meter)
    return trainer, launches, batch_bytes


def layer_table(model, launches):
    """The launches of each layer's forward and backward, then of everything else."""
    rows = [("layer", "forward", "backward")]
    for name in model.layers:
        rows.append((name, launches.of(name, "forward"), launches.of(name, "backward")))
    known = {(name, m) for name in model.layers for m in ("forward", "backward")}
    others = {}
    for (owner, method), n in launches.owners.items():
        if (owner, method) not in known:
            others[f"{owner}.{method}"] = others.get(f"{owner}.{method}", 0) + n
    lines = [f"    {r[0]:<10s} {r[1]:>8} {r[2]:>9}" for r in rows]
    forward = sum(r[1] for r in rows[1:])
    backward = sum(r[2] for r in rows[1:])
    lines.append(f"    {'layers':<10s} {forward:>8} {backward:>9}")
    for what, n in sorted(others.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {what:<28s} {n:>5}")
    return "\n".join(lines)


SCENARIOS = [   # name, model, batch, optimizer, side, augment+lighting
    ("alexnet32 b64 adam", "alexnet32", 64, "adam", 32, False),
    ("alexnet32 b64 sgd", "alexnet32", 64, "sgd", 32, False),
    ("alexnet32 b64 sgd, crops+flips+lighting", "alexnet32", 64, "sgd", 32, True),
]


@pytest.mark.parametrize("label, model, batch, optimizer, side, augment", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_launches_per_training_step(standin, tmp_path, label, model, batch, optimizer, side,
                                    augment):
    trainer, launches, batch_bytes = count_training_step(
        standin, tmp_path, model, batch, optimizer, side, augment, augment)
    print(f"\n{label}: {launches.count} launches, {launches.reads.count} device-to-host reads, "
          f"{launches.copies_in} host-to-device copies ({launches.bytes_in:,} bytes; the batch "
          f"is {batch_bytes:,}) per training step; {launches.float64_count} launches in float64")
    print(layer_table(trainer.model, launches))
