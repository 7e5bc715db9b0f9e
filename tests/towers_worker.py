"""Run by tests/test_parallel_towers.py under ``mpiexec -n 2``: the two towers of a model
against the one-process grouped model, every rank computing the reference itself.

    mpiexec -n 2 python tests/towers_worker.py MODEL BATCH NUM_CLASSES STEPS

Each step: forward, loss, backward, one SGD update (momentum, weight decay); dropout on.

Rank 0 prints one JSON line: for each compared quantity the largest difference relative to
the reference's largest magnitude.  Nothing is asserted here; the test reads the numbers.
"""
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tinyalexnet.layers import SoftmaxCrossEntropy  # noqa: E402
from tinyalexnet.models import get_model  # noqa: E402
from tinyalexnet.optim import SGD  # noqa: E402
from tinyalexnet.parallel.model_parallel import Peer, Towers  # noqa: E402
from tinyalexnet.parallel.mpi import world  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main(name, batch, classes, steps):
    peer = Peer(world())
    ref = get_model(name, num_classes=classes, in_channels=3, seed=3).to("numpy", dtype="float64")
    ref["conv1"].input_grad = True                 # compare the image's gradient too
    ref.train()
    tower = Towers(copy.deepcopy(ref), peer, name)
    side = ref.input_shape[1]
    data = np.random.default_rng(7)
    x = data.standard_normal((batch, 3, side, side))
    labels = data.integers(0, classes, batch)
    errors = {}

    def step(model, loss_fn):
        logits = model.forward(x.copy())
        loss = loss_fn.forward(logits, labels)
        dx = model.backward(loss_fn.backward())
        return logits, loss, dx

    ref_opt = SGD(ref, lr=0.05, momentum=0.9, weight_decay=5e-4)
    tower_opt = SGD(tower, lr=0.05, momentum=0.9, weight_decay=5e-4)
    for k in range(steps):                  # the second step runs after an update
        r_logits, r_loss, r_dx = step(ref, SoftmaxCrossEntropy())
        t_logits, t_loss, t_dx = step(tower, SoftmaxCrossEntropy())
        errors[f"step{k}/logits"] = rel(t_logits, r_logits)
        errors[f"step{k}/loss"] = rel(t_loss, r_loss)
        errors[f"step{k}/input_grad"] = rel(t_dx, r_dx)
        grads = tower.joined_grads()
        for n, _, g in ref.named_parameters():
            errors[f"step{k}/grad/{n}"] = rel(grads[n], g)
        ref_opt.step()
        tower_opt.step()
        joined = tower.joined_state_dict()
        for n, p in ref.state_dict().items():
            errors[f"step{k}/update/{n}"] = rel(joined[n], p)
    ref.eval()
    tower.eval()
    errors["eval/logits"] = rel(tower.forward(x.copy()), ref.forward(x.copy()))
    traffic = tower.traffic()
    if peer.rank == 0:
        print(json.dumps({"errors": errors, "traffic": traffic}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
