"""One epoch of training in float32 or float64, alone or as one rank of several
(tests/test_parallel_data.py starts it: ``python tests/parallel_worker.py`` for one
process, under ``mpiexec -n 2`` with ``--data-parallel`` for two).

Writes OUT/params.npy (the flat parameters after the epoch) and OUT/numbers.json
(the epoch's record) from rank 0.  The data: 39 colour images, so that with a
batch of 16 the epoch has steps of 16, 16 and 7 images (the last one split 4 + 3
over two ranks); random crops, reflections, colour noise and dropout are on.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyalexnet.config import make_config                 # noqa: E402
from tinyalexnet.datasets import ArrayDataset              # noqa: E402
from tinyalexnet.train import Trainer, make_optimizer      # noqa: E402


def colour_data(n, seed, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 120, (n, 3, 32, 32))
    for k in range(3):
        images[np.arange(n), labels % 3, 4 + 6 * labels + k, 4:28] += 120
    return ArrayDataset(images.astype(np.uint8), labels, [f"c{k}" for k in range(classes)],
                        name="colours")


class Cast:
    """The run's pipeline, its output cast to ``dtype`` (the Trainer trains in float32)."""

    def __init__(self, pipeline, dtype):
        self.pipeline, self.dtype = pipeline, dtype

    def __call__(self, *args, **kwargs):
        return self.pipeline(*args, **kwargs).astype(self.dtype)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--data-parallel", action="store_true")
    args = p.parse_args()
    parallel = None
    if args.data_parallel:
        from tinyalexnet.parallel import DataParallel, world
        parallel = DataParallel(world(timeout=60))
    options = dict(epochs=1, batch_size=16, eval_batch_size=8, augment=True, lighting=True,
                   optimizer=args.optimizer, val_fraction=0)
    if args.optimizer == "sgd":          # the paper's rule: momentum 0.9, weight decay 5e-4
        options.update(lr=0.01, momentum=0.9, weight_decay=5e-4)
    data = (colour_data(39, 0), colour_data(10, 1), colour_data(10, 1))
    trainer = Trainer(make_config(**options), os.path.join(args.out, "run"), datasets=data,
                      progress=False, log=None, parallel=parallel)
    if args.dtype != "float32":
        trainer.model.to(dtype=args.dtype)
        trainer.optimizer = trainer.stops.optimizer = make_optimizer(trainer.config,
                                                                     trainer.model)
        trainer.pipeline = Cast(trainer.pipeline, args.dtype)
    history = trainer.fit()
    if trainer.writes:
        np.save(os.path.join(args.out, "params.npy"), trainer.model.flat_params())
        with open(os.path.join(args.out, "numbers.json"), "w") as f:
            json.dump(history[-1], f)


if __name__ == "__main__":
    main()
