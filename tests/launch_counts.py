"""Launches per training step, eager and replayed as CUDA graphs, counted on the CPU.

A lesson cell (or anyone) can print the comparison without a GPU::

    import sys; sys.path.insert(0, "../tests")          # from lessons/
    from launch_counts import eager_vs_graph
    eager_vs_graph("alexnet32", 64, "adam")             # prints two lines, returns the counts

It installs the strict CuPy stand-in (tests/strict_cupy.py) for the duration,
builds two Trainers on random 32x32 images, and counts one steady-state step of
each with ``strict_cupy.count_launches``: the eager step (after one warm-up step),
and a replayed step (after the warm-up and the capture).  A replayed step's
launches are its graph launches, the cuBLAS products run between them (CuPy 14
refuses them inside a capture: graph.py) and the batch's two copies.
"""
import contextlib
import os
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_references  # noqa: E402
import strict_cupy  # noqa: E402


def _trainer(folder, model, batch, optimizer, cuda_graph, augment=False):
    from tinyalexnet.config import make_config
    from tinyalexnet.datasets import ArrayDataset
    from tinyalexnet.metrics import RunningMeter
    from tinyalexnet.train import Trainer
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (3 * batch, 3, 32, 32)).astype(np.uint8),
                        rng.integers(0, 10, 3 * batch), [f"c{k}" for k in range(10)])
    rule = dict(momentum=0.9, weight_decay=5e-4) if optimizer == "sgd" else {}
    config = make_config(model=model, batch_size=batch, optimizer=optimizer, backend="cupy",
                         epochs=1, lr=0.01, cuda_graph=cuda_graph, augment=augment,
                         lighting=augment, **rule)
    trainer = Trainer(config, folder, datasets=(data, data, data), progress=False, log=None)
    trainer.meter = RunningMeter(trainer.xp)
    return trainer


def count_step(trainer, counted_step):
    """Run steps 0 .. counted_step - 1, then count step ``counted_step``: a Launches."""
    data, B = trainer.train_set, trainer.config.batch_size
    for step in range(counted_step + 1):
        images, labels = data.get_batch(np.arange(B) + (step % 3) * B)
        if step < counted_step:
            trainer._train_step(step, images, labels)
            continue
        with strict_cupy.count_launches() as launches:
            trainer._train_step(step, images, labels)
        return launches


@contextlib.contextmanager
def standin_installed():
    with pytest.MonkeyPatch.context() as mp:
        yield strict_cupy.install(mp)


def eager_vs_graph(model="alexnet32", batch=64, optimizer="adam", show=True):
    """{"eager": Launches, "graph": Launches, "graphs": n, "products": n} for one step."""
    with standin_installed(), tempfile.TemporaryDirectory() as folder:
        kernel_references.register(strict_cupy)
        eager = count_step(_trainer(os.path.join(folder, "e"), model, batch, optimizer, False), 1)
        replay_trainer = _trainer(os.path.join(folder, "g"), model, batch, optimizer, True)
        replayed = count_step(replay_trainer, 2)
        g = replay_trainer.graph.graph
        if g is None:
            raise RuntimeError(f"the step was not captured: {replay_trainer.graph.failed}")
        result = {"eager": eager, "graph": replayed, "graphs": g.graphs, "products": g.products}
    if show:
        label = f"{model} b{batch} {optimizer}"
        print(f"{label} eager: {eager.count} launches per training step")
        print(f"{label} cuda graph: {replayed.count} launches per training step "
              f"({replayed.names['graph launch']} graph launches, "
              f"{replayed.names['matmul']} cuBLAS products between them, "
              f"{replayed.count - replayed.names['graph launch'] - replayed.names['matmul']} "
              f"other), {replayed.copies_in} host-to-device copies, "
              f"{replayed.reads.count} reads")
    return result


if __name__ == "__main__":
    eager_vs_graph(*(sys.argv[1:2] or ["alexnet32"]),
                   *([int(sys.argv[2])] if len(sys.argv) > 2 else []),
                   *(sys.argv[3:4]))
