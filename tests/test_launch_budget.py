"""Launches per training step: what one step asks of a GPU, counted on the CPU.

A small network's step on a GPU is bound by how many array operations the host
launches one after another, not by arithmetic: alexnet32 at batch 64 is about 70
GFLOP a step, a few milliseconds of matrix products on an H100, while each launch
costs the host some 10-20 microseconds.  The strict CuPy stand-in counts the
launches as CuPy would make them (``strict_cupy.count_launches``; its rules, taken
from CuPy's source, are checked in test_strict_cupy.py), with the device-to-host
reads and the host-to-device copies and their bytes.

    python -m pytest tests/test_launch_budget.py -q -s

prints one line per model, and the launches of each layer (forward, backward), of
the weight update, the input pipeline, the loss and the running numbers.  Each
model has a budget: the test fails when a change adds launches, and also when the
count falls well below its budget (then lower the budget, so that it keeps
catching the next regression).  The paper's AlexNet is counted at batch 4 (a step
at batch 128 takes minutes on two CPU cores; LAUNCH_BUDGET_B128=1 adds it: its
count differs only where CuPy's rules depend on sizes).
"""
import os

import numpy as np
import pytest

import kernel_references
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.config import make_config
from tinyalexnet.metrics import RunningMeter, evaluate
from tinyalexnet.train import Trainer

SLACK = 0.03     # a budget may stand this far above its count, no further


def images(n, side, seed=0, classes=10):
    """RGB uint8 images of one side (CIFAR-10's 32, or the paper's 256) and their labels."""
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, 3, side, side)).astype(np.uint8),
                        rng.integers(0, classes, n), [f"c{k}" for k in range(classes)],
                        name=f"rgb{side}")


def make_trainer(tmp_path, model, batch, optimizer, side=32, augment=False, n=None):
    """``optimizer``: "sgd" (the paper's rule: momentum 0.9, weight decay 5e-4), "adam", or
    "adam fused" / "sgd fused" (the optimizer's fused kernel, run by the stand-in from its
    registered reference)."""
    train = images(n or 2 * batch, side)
    rule = dict(momentum=0.9, weight_decay=5e-4) if optimizer == "sgd" else {}
    config = make_config(model=model, batch_size=batch, optimizer=optimizer.split()[0],
                         backend="cupy", augment=augment, lighting=augment, epochs=1, lr=0.01,
                         **rule)
    trainer = Trainer(config, tmp_path, datasets=(train, train, train), progress=False, log=None)
    if optimizer.endswith(" fused"):
        trainer.optimizer.fused = True
    return trainer


def count_training_step(standin, tmp_path, model, batch, optimizer, side=32, augment=False):
    """The launches, reads and copies of the Trainer's own step (pipeline, forward, loss,
    backward, update, running sums) in steady state: step 1 runs first (it makes the
    optimizer's state), step 2 is counted.  Returns (trainer, Launches, the batch's bytes)."""
    kernel_references.register(standin)
    trainer = make_trainer(tmp_path, model, batch, optimizer, side, augment)
    trainer.meter = RunningMeter(trainer.xp)
    trainer._train_step(0, *trainer.train_set.get_batch(np.arange(batch)))
    images, labels = trainer.train_set.get_batch(np.arange(batch, 2 * batch))
    batch_bytes = images.nbytes + labels.nbytes
    with standin.count_launches() as launches:
        trainer._train_step(1, images, labels)
    return trainer, launches, batch_bytes


def layer_table(model, launches):
    """The launches of each layer's forward and backward, then of everything else."""
    lines = [f"    {'layer':<10s} {'forward':>8} {'backward':>9}"]
    forward = backward = 0
    for name in model.layers:
        f, b = launches.of(name, "forward"), launches.of(name, "backward")
        forward, backward = forward + f, backward + b
        lines.append(f"    {name:<10s} {f:>8} {b:>9}")
    lines.append(f"    {'layers':<10s} {forward:>8} {backward:>9}")
    others = {}
    for (owner, method), n in launches.owners.items():
        if owner not in model.layers:
            others[f"{owner}.{method}"] = others.get(f"{owner}.{method}", 0) + n
    for what, n in sorted(others.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {what:<28s} {n:>5}")
    return "\n".join(lines)


def check_budget(count, budget, what):
    assert count <= budget, f"{what}: {count} launches, over its budget of {budget}"
    assert count >= budget * (1 - SLACK), (
        f"{what}: {count} launches, well under its budget of {budget}: lower the budget "
        f"to {count} so that it catches the next regression")


# name, model, batch, optimizer, image side, augmentation (crops, flips, lighting), budget
SCENARIOS = [
    ("alexnet32 b64 adam", "alexnet32", 64, "adam", 32, False, 108),
    ("alexnet32 b64 adam fused", "alexnet32", 64, "adam fused", 32, False, 95),
    ("alexnet32 b64 sgd", "alexnet32", 64, "sgd", 32, False, 100),
    ("alexnet32 b64 sgd fused", "alexnet32", 64, "sgd fused", 32, False, 95),
    ("alexnet32 b64 sgd augmented", "alexnet32", 64, "sgd", 32, True, 100),
    ("alexnet_small b64 adam", "alexnet_small", 64, "adam", 32, False, 115),
    ("alexnet b4 sgd augmented", "alexnet", 4, "sgd", 256, True, 107),
]
if os.environ.get("LAUNCH_BUDGET_B128"):
    SCENARIOS.append(("alexnet b128 sgd augmented", "alexnet", 128, "sgd", 256, True, 107))


@pytest.mark.parametrize("label, model, batch, optimizer, side, augment, budget", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_launches_per_training_step(standin, tmp_path, label, model, batch, optimizer, side,
                                    augment, budget):
    """Within budget, and: nothing read back, nothing in float64, and only the batch
    copied in (images and labels; with augmentation also each image's crop rows and
    columns, and its lighting shift, drawn on the host)."""
    trainer, launches, batch_bytes = count_training_step(
        standin, tmp_path, model, batch, optimizer, side, augment)
    print(f"\n{label}: {launches.count} launches, {launches.reads.count} device-to-host reads, "
          f"{launches.copies_in} host-to-device copies ({launches.bytes_in:,} bytes; the batch "
          f"is {batch_bytes:,}) per training step; {launches.float64_count} launches in float64")
    print(layer_table(trainer.model, launches))
    assert launches.reads.count == 0, launches.reads
    assert launches.float64_count == 0, launches
    # a kernel's launch counts for the layer that called it, never for the kernel itself
    assert not [o for o, _ in launches.owners if o.startswith("tinyalexnet_")], launches.owners
    extra = 0
    if augment:
        C, h, w = trainer.model.input_shape
        extra = batch * (h + w) * 4 + batch * C * 4     # int32 rows and columns, float32 shifts
    assert (launches.copies_in, launches.bytes_in) == (4 if augment else 2,
                                                       batch_bytes + extra), launches
    check_budget(launches.count, budget, label)


@pytest.mark.parametrize("ten_crop, budget", [(False, 70), (True, 449)])
def test_evaluation_reads_once_and_copies_each_batch_once(standin, tmp_path, ten_crop, budget):
    """Three batches of alexnet32: one read in all (the sums, at the end), no per-layer
    check; each batch copies its images and labels in, and launches within budget."""
    trainer = make_trainer(tmp_path, "alexnet32", 16, "adam", n=48)
    evaluate(trainer.model, trainer.train_set, trainer.pipeline, batch_size=16)   # warm
    with standin.count_launches() as launches:
        evaluate(trainer.model, trainer.train_set, trainer.pipeline, batch_size=16,
                 ten_crop=ten_crop)
    per_batch = launches.count / 3
    print(f"\nevaluate alexnet32 b16{' ten-crop' if ten_crop else ''}: {per_batch:.0f} launches "
          f"and {launches.copies_in / 3:.0f} host-to-device copies per batch, "
          f"{launches.reads.count} device-to-host read in all")
    assert launches.reads.count == 1 == launches.reads.at("evaluate"), launches.reads
    images_and_labels = 2 * 3
    tables = 3 * 3 if ten_crop else 0       # stacking 10 crops: CuPy copies 3 small tables
    assert launches.copies_in == images_and_labels + tables, launches
    check_budget(per_batch, budget, "evaluate" + (" ten-crop" if ten_crop else ""))


# The same steps replayed as CUDA graphs (graph.py; Trainer(cuda_graph=True)): a replayed
# step is its graph launches and the cuBLAS products between them (CuPy 14 refuses cuBLAS in
# a capture), and the batch's two copies; the step's running numbers are written by the graph.
# name, model, batch, optimizer, augmentation (crops, flips, lighting), budget
GRAPH_SCENARIOS = [
    ("alexnet32 b64 adam cuda graph", "alexnet32", 64, "adam", False, 47),
    ("alexnet32 b64 sgd cuda graph", "alexnet32", 64, "sgd", False, 47),
    ("alexnet32 b64 sgd augmented cuda graph", "alexnet32", 64, "sgd", True, 47),
]


@pytest.mark.parametrize("label, model, batch, optimizer, augment, budget", GRAPH_SCENARIOS,
                         ids=[s[0] for s in GRAPH_SCENARIOS])
def test_launches_per_replayed_graph_step(standin, tmp_path, label, model, batch, optimizer,
                                          augment, budget):
    """A replayed step (after the warm-up and the capture): within budget, nothing read back,
    only the batch copied in, and every launch a graph launch or a product; the products as
    many as the step makes, counted on the eager step."""
    import launch_counts
    kernel_references.register(standin)
    eager = launch_counts.count_step(
        launch_counts._trainer(tmp_path / "eager", model, batch, optimizer, False, augment), 1)
    trainer = launch_counts._trainer(tmp_path / "graph", model, batch, optimizer, True, augment)
    launches = launch_counts.count_step(trainer, 2)
    graphs, products = launches.names["graph launch"], launches.names["matmul"]
    batch_bytes = batch * 3 * 32 * 32 + batch * 8
    # with augmentation also each image's crop table (int32 columns and rows) and its
    # lighting shift (float32 per channel), drawn on the host, copied into their buffers
    extra = batch * (32 + 32) * 4 + batch * 3 * 4 if augment else 0
    print(f"\n{label}: {launches.count} launches ({graphs} graph launches, {products} cuBLAS "
          f"products between them), {launches.reads.count} device-to-host reads, "
          f"{launches.copies_in} host-to-device copies ({launches.bytes_in:,} bytes; the batch "
          f"is {batch_bytes:,}) per training step; eager: {eager.count} launches, "
          f"{eager.copies_in} copies ({eager.bytes_in:,} bytes)")
    print(table_of_owners(launches))
    assert trainer.graph.graph is not None, trainer.graph.failed
    assert launches.reads.count == 0, launches.reads
    assert (launches.copies_in, launches.bytes_in) == (4 if augment else 2,
                                                       batch_bytes + extra), launches
    assert (launches.copies_in, launches.bytes_in) == (eager.copies_in, eager.bytes_in)
    assert products == eager.names["matmul"], (products, eager.names["matmul"])
    assert graphs == products + 1                       # graph, product, graph, ..., graph
    assert launches.count == graphs + products, launches
    check_budget(launches.count, budget, label)


def table_of_owners(launches):
    return "\n".join(f"    {o + '.' + m if m else o:<28s} {n:>5}"
                     for (o, m), n in launches.owners.most_common())
