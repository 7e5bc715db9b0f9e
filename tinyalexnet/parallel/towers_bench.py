"""The two towers measured: bytes at each crossing, and one process against two ranks.

    python -m tinyalexnet.parallel.towers_bench --model alexnet --batch-size 16
    python -m tinyalexnet.parallel.towers_bench --model alexnet_small --batch-size 64

1. **Bytes per image at each crossing** of the model (float32 by default),
   forward and backward, counted from the layers' shapes: where the paper's
   Figure 2 has the towers talk (conv3, fc6, fc7, fc8 read both towers; the
   logits are gathered for the softmax), the LRN halo our one-process LRN
   needs (``model_parallel.HaloLRN``), and, beside them, what conv2, conv4 and
   conv5 would add if they read both towers too (the network without
   ``groups=2``): the paper's point, that the grouped layers keep most maps on
   their own GPU.
2. **Time**: whole training steps (forward, loss, backward, SGD update) of the
   one-process grouped model with 2 BLAS threads (and, to see what the second
   thread buys, with 1), against the two towers on 2 ranks (``mpiexec -n 2``)
   with 1 BLAS thread each, alternating (one order, then the reverse ...) so
   that other programs' load falls on all; images/s of each, the ratios, and
   the time per step rank 0 spent in the exchanges (waiting for the other tower
   included), with the bytes the ranks really sent, which must equal the count
   of part 1.

Each timing runs in a fresh process (the BLAS thread count is fixed when NumPy
loads).  ``--no-time`` prints part 1 only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .. import backend
from ..backend import numpy as np
from ..layers import Conv2d, Linear, LocalResponseNorm
from ..machine import OtherLoad, load_line
from ..models import MODELS, get_model, model_name
from . import launch
from .towers import TOWERS, check_towers


# --------------------------------------------------------------------- 1. counted bytes

def crossings(model, itemsize=4, every_layer=False):
    """``[(name, what, forward bytes, backward bytes), ...]`` per image that *one* rank
    sends at each crossing of a training step (the other rank sends the same).

    From the layers' shapes: a Gather before a layer that reads both towers sends this
    tower's half of its input forward and the other tower's columns of the gradient back
    (the same size); the LRN halo ``size // 2`` channels each way; the logits their half,
    forward only.  ``every_layer``: as if conv2, conv4 and conv5 had no groups and read
    both towers as well (the halo and the other crossings unchanged)."""
    check_towers(model)
    rows, shape, split = [], tuple(model.input_shape), False
    for name, layer in model.layers.items():
        half = int(np.prod(shape)) // TOWERS * itemsize           # this tower's part of the input
        if isinstance(layer, (Conv2d, Linear)):
            grouped = isinstance(layer, Conv2d) and layer.groups == TOWERS
            if split and (not grouped or every_layer):
                what = "reads both towers" + ("" if not grouped else " (if not grouped)")
                rows.append((f"to_{name}", what, half, half))
            split = True
        elif isinstance(layer, LocalResponseNorm) and split:
            halo = (layer.size // 2) * int(np.prod(shape[1:])) * itemsize
            rows.append((name, "LRN halo (one-process LRN spans the towers)", halo, halo))
        shape = layer.output_shape(shape)
    logits = int(np.prod(shape)) // TOWERS * itemsize
    rows.append(("logits", "fc8's halves for the softmax", logits, 0))
    return rows


def print_crossings(model, name, itemsize):
    towers, every = crossings(model, itemsize), crossings(model, itemsize, every_layer=True)
    print(f"bytes one rank sends per image at each crossing ({name}, {itemsize}-byte floats; "
          f"the other rank sends as many)")
    print(f"  {'crossing':<10} {'forward':>10} {'backward':>10}  what")
    for row in every:
        tag = "" if row in towers else "   <- only without groups=2"
        print(f"  {row[0]:<10} {row[2]:>10,} {row[3]:>10,}  {row[1]}{tag}")
    total = sum(r[2] + r[3] for r in towers)
    total_every = sum(r[2] + r[3] for r in every)
    print(f"  per image, forward + backward: {total:,} bytes with the paper's towers, "
          f"{total_every:,} if conv2, conv4 and conv5 read both towers "
          f"({total / total_every:.2f} of it)")
    return total


# --------------------------------------------------------------------- 2. timed steps

def _step_runner(model, batch, classes, dtype):
    """A function running one training step of ``model`` on a fixed random batch."""
    from ..layers import SoftmaxCrossEntropy
    from ..optim import SGD
    side = model.input_shape[1]
    data = np.random.default_rng(0)
    x = data.standard_normal((batch, model.input_shape[0], side, side)).astype(dtype)
    labels = data.integers(0, classes, batch)
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model, lr=0.001)
    checks = backend.check_finite_default("numpy")
    model.set_check_finite(checks)
    loss_fn.set_check_finite(checks)

    def step():
        loss_fn.forward(model.forward(x), labels)
        model.backward(loss_fn.backward())
        optimizer.step()
    return step


def worker(args):
    """One timing, in this process (``--worker one``) or as a rank of two (``towers``)."""
    classes = 1000 if args.model == "alexnet" else 10
    model = get_model(args.model, num_classes=classes, seed=0).to("numpy", dtype=args.dtype)
    model.train()
    rank, towers = 0, None
    if args.worker == "towers":
        from .model_parallel import Peer, Towers
        from .mpi import world
        towers = Towers(model, Peer(world()), args.model)
        rank, model = towers.rank, towers
    step = _step_runner(model, args.batch_size, classes, args.dtype)
    step()                                     # warm-up: first-touch of every buffer
    if towers is not None:
        towers.reset_traffic()
    seconds, exchange = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
        if towers is not None:
            total = sum(t["seconds"] for t in towers.traffic().values())
            exchange.append(total - sum(exchange))
    if rank == 0:
        report = {"seconds": seconds, "exchange": exchange}
        if towers is not None:
            report["traffic"] = towers.traffic()
        print("RESULT " + json.dumps(report), flush=True)


KINDS = {"one2": ("one", 2), "one1": ("one", 1), "towers": ("towers", 1)}   # worker, threads


def _run(kind, args):
    """One timing in a fresh process (``launch.py``'s mpiexec for the towers): its report."""
    worker_kind, threads = KINDS[kind]
    options = ["--worker", worker_kind, "--model", args.model, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--dtype", args.dtype]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = launch.environment(threads)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    module = "tinyalexnet.parallel.towers_bench"
    if worker_kind == "towers":
        command = launch.command(2, options, module=module)
    else:
        command = [sys.executable, "-m", module, *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"error: the {kind} timing failed: {(done.stderr or done.stdout)[-800:]}")
    return json.loads(lines[-1][len("RESULT "):])


class _LoadWithChildren(OtherLoad):
    """OtherLoad, counting the timed child processes (finished, waited for) as our own."""

    def _read(self):
        got = super()._read()
        if got is None:
            return None
        t = os.times()
        return got[0], got[1] + t.children_user + t.children_system, got[2]


def time_both(args):
    load = _LoadWithChildren().start()
    runs = {kind: [] for kind in KINDS}
    for r in range(args.rounds):
        order = list(KINDS) if r % 2 == 0 else list(reversed(KINDS))
        for kind in order:
            runs[kind].append(_run(kind, args))
    busy = load.stop()
    step = {kind: [statistics.median(r["seconds"]) for r in runs[kind]] for kind in KINDS}
    swap = [statistics.median(r["exchange"]) for r in runs["towers"]]
    b = args.batch_size
    print(f"\ntraining step ({args.model}, batch {b}, {args.dtype}, SGD), median of "
          f"{args.steps} steps per run, {args.rounds} runs each, alternating:")
    labels = {"one2": "one process, 2 BLAS threads:  ", "one1": "one process, 1 BLAS thread:   ",
              "towers": "two towers, 2 ranks x 1 thread:"}
    for kind, label in labels.items():
        median = statistics.median(step[kind])
        print(f"  {label} {b / median:8.1f} images/s  ({1000 * median:.0f} ms/step)")
    for kind, what in (("one2", "one process x 2 threads"), ("one1", "one process x 1 thread")):
        ratios = [o / t for o, t in zip(step[kind], step["towers"])]
        print(f"  two towers / {what}: {statistics.median(ratios):.2f}x images/s "
              f"(runs: {', '.join(f'{x:.2f}' for x in ratios)})")
    towers = statistics.median(step["towers"])
    print(f"  rank 0's time in the exchanges (waiting for the other tower included): "
          f"{1000 * statistics.median(swap):.1f} ms/step, "
          f"{100 * statistics.median(swap) / towers:.0f}% of the step")
    traffic = runs["towers"][-1]["traffic"]
    sent = sum(t["forward"] + t["backward"] for t in traffic.values())
    print(f"  bytes rank 0 sent per image (measured): {sent:,.0f}")
    if busy is not None:
        print("  " + load_line(busy))
    return sent


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyalexnet.parallel.towers_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_name, default="alexnet",
                        choices=sorted(m for m in MODELS if m != "alexnet32"),
                        help="a model with two towers (default: alexnet)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default 3)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="runs of each, alternating (default 4)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-time", action="store_true", help="print the byte counts only")
    parser.add_argument("--worker", choices=("one", "towers"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--batch-size, --steps and --rounds must be at least 1")
    if args.worker:
        return worker(args)
    classes = 1000 if args.model == "alexnet" else 10
    model = get_model(args.model, num_classes=classes, seed=0)
    counted = print_crossings(model, args.model, np.dtype(args.dtype).itemsize)
    if not args.no_time:
        sent = time_both(args)
        if round(sent) != counted:
            print(f"  warning: measured {sent:,.0f} bytes per image, counted {counted:,}")


if __name__ == "__main__":
    main()
