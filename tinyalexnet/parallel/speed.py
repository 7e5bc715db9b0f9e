"""One process against N ranks: ``python -m tinyalexnet.parallel.speed``.

    python -m tinyalexnet.parallel.speed --models alexnet_small alexnet32 --batch-sizes 32 128

For each model and global batch size it times the same training step (Adam,
NumPy) two ways, alternating, ``--rounds`` times each:

- one process with ``--ranks`` BLAS threads (OPENBLAS_NUM_THREADS=N): the
  cores split the work of each matrix product (and, for reference, the same
  process with one thread: what the second thread adds);
- ``--ranks`` processes under mpiexec (parallel/launch.py), one BLAS thread
  each, data parallel: each takes B/N images, and one all-reduce a step sums
  the gradients (parallel/allreduce.py, MPI through shared memory).

It prints images per second of each (the best round: on a busy machine the
best is the least disturbed), their ratio, and the milliseconds a step spends
in the all-reduce (rank 0's wait included: a rank that finishes its part first
waits there for the slower one), and the all-reduce by itself (the same buffer
summed back to back, the ranks already in step: the transfer alone).  Each measurement runs in a fresh process,
``--worker``, which prints one JSON line.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from ..backend import numpy as np
from . import launch


def measure(model_name, batch, steps, warmup, data_parallel):
    """Time ``steps`` training steps after ``warmup``; a dict of the numbers (this rank's)."""
    from ..layers import SoftmaxCrossEntropy
    from ..models import get_model
    from ..optim import Adam
    from .data import DataParallel
    from .mpi import world
    model = get_model(model_name, num_classes=10, in_channels=3, seed=0)
    model.to("numpy")
    optimizer, loss_fn = Adam(model, lr=1e-3), SoftmaxCrossEntropy()
    strategy = DataParallel(world()) if data_parallel else None
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
    y_all = rng.integers(0, 10, batch)
    in_allreduce = 0.0
    for k in range(warmup + steps):
        if k == warmup:
            in_allreduce, start = 0.0, time.perf_counter()
        part = strategy.begin_step(model, batch) if strategy else (0, batch, batch)
        x, y = x_all[part[0]:part[1]], y_all[part[0]:part[1]]
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        if strategy:
            t = time.perf_counter()
            strategy.average_gradients(model, part)
            in_allreduce += time.perf_counter() - t
        optimizer.step()
    seconds = time.perf_counter() - start
    alone = 0.0
    if strategy:                     # the sum by itself, back to back: the ranks in step
        grads = model.flat_grads()
        t = time.perf_counter()
        for _ in range(steps):
            strategy.world.exchange("timing", buf=grads)
        alone = (time.perf_counter() - t) / steps
    return {"model": model_name, "batch": batch, "ranks": strategy.size if strategy else 1,
            "images_per_s": batch * steps / seconds, "step_ms": 1e3 * seconds / steps,
            "allreduce_ms": 1e3 * in_allreduce / steps, "allreduce_alone_ms": 1e3 * alone,
            "gradient_bytes": int(model.flat_grads().nbytes)}


def run_one(model_name, batch, args, ranks, threads=None):
    """One measurement in fresh processes: 1 process with ``threads`` BLAS threads (default
    ``args.ranks``; ranks=1), or ``ranks`` data-parallel processes of one thread each."""
    worker = ["--worker", "--models", model_name, "--batch-sizes", str(batch), "--steps",
              str(args.steps), "--warmup", str(args.warmup)]
    if ranks == 1:
        cmd = [sys.executable, "-m", "tinyalexnet.parallel.speed", *worker]
        env = launch.environment(threads=threads or args.ranks)
    else:
        cmd = launch.command(ranks, [*worker, "--data-parallel"], "tinyalexnet.parallel.speed")
        env = launch.environment(threads=1)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {out.stderr.strip()[-500:]}")
    return json.loads(lines[0])


# Links, bytes per second in one direction (vendors' figures, BENCHMARKS.md "Parallel" cites
# them): NVLink 4 on an H100 is 900 GB/s in all, both directions together.
LINKS = (("NVLink 4 (H100)", 450e9), ("PCIe 5.0 x16", 64e9), ("InfiniBand NDR", 50e9),
         ("PCIe 4.0 x16", 32e9))
ASSUMED_FLOPS = 50e12        # achieved per GPU, an assumption (TF32 peak is ~495e12 dense)


def on_paper(batch=128, counts=(2, 4, 8, 16, 64), flops=ASSUMED_FLOPS):
    """What data parallelism moves per step for the paper's AlexNet, from the model's own
    counts, and what Krizhevsky's 2014 hybrid (data parallel convolutions, model parallel
    fc6-fc8) moves instead; printed as tables."""
    from ..models import get_model
    model = get_model("alexnet", num_classes=1000, in_channels=3)
    params = fc = 0
    for name, p, _ in model.named_parameters():
        params += p.size
        fc += p.size if name.startswith(("fc6", "fc7", "fc8")) else 0
    conv = params - fc
    per_image = 3 * 2 * 724_406_816          # forward multiply-adds x 2 FLOPs, x 3 with backward
    step = batch * per_image / flops
    grad = 4 * params
    # fc6's input, fc7's and fc8's: the activations the fully connected layers exchange
    fc_inputs = 256 * 6 * 6 + 4096 + 4096
    print(f"AlexNet (paper, 1000 classes): {params:,} parameters, {fc:,} in fc6-fc8 "
          f"({fc / params:.1%}), {conv:,} in conv1-conv5; its gradient in float32: "
          f"{grad / 1e6:.1f} MB")
    print(f"training: 3 x 2 x 724,406,816 = {per_image / 1e9:.2f} GFLOP per image; at an assumed "
          f"{flops / 1e12:.0f} TFLOP/s per GPU a step of {batch} images takes {1e3 * step:.1f} ms")
    print(f"ring all-reduce: each GPU sends (and receives) 2(N-1)/N x {grad / 1e6:.1f} MB a step")
    def ring(n):                  # bytes one GPU sends in a ring all-reduce of the gradient
        return 2 * (n - 1) / n * grad

    def per_link(title, value):   # one row per GPU count, one column per link
        print(title)
        print(f"{'N GPUs':>8}" + "".join(f"{name:>22}" for name, _ in LINKS))
        for n in counts:
            print(f"{n:>8}" + "".join(f"{value(n, ring(n) / bw):>22.2f}" for _, bw in LINKS))

    print(f"{'N GPUs':>8}{'MB sent':>9}" + "".join(f"{name + ' ms':>22}" for name, _ in LINKS))
    for n in counts:
        print(f"{n:>8}{ring(n) / 1e6:>9.1f}"
              + "".join(f"{1e3 * ring(n) / bw:>22.2f}" for _, bw in LINKS))
    per_link(f"weak scaling ({batch} images per GPU, no overlap): step time / compute alone",
             lambda n, send: (step + send) / step)
    per_link(f"strong scaling (the paper's global batch of {batch}, {batch}/N per GPU, no "
             f"overlap): speed-up over one GPU", lambda n, send: step / (step / n + send))
    print(f"hybrid (Krizhevsky 2014): conv gradients all-reduced, fc6-fc8 split by neuron, their "
          f"inputs ({fc_inputs:,} floats per image) gathered and their gradients scattered back")
    print(f"{'N GPUs':>8}{'data parallel MB':>18}{'hybrid MB':>11}{'of which fc':>13}")
    for n in counts:
        dp = ring(n)
        acts = 2 * (n - 1) * batch * fc_inputs * 4
        hybrid = 2 * (n - 1) / n * 4 * conv + acts
        print(f"{n:>8}{dp / 1e6:>18.1f}{hybrid / 1e6:>11.1f}{acts / 1e6:>13.1f}")
    even = 4 * fc / (fc_inputs * 4)
    print(f"the hybrid moves fewer bytes while the global batch is below about {even:,.0f} "
          f"images (N x per-GPU batch)")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinyalexnet.parallel.speed",
                                description="images/s of 1 process with N BLAS threads against "
                                            "N data-parallel ranks of 1 thread each")
    p.add_argument("--models", nargs="+", default=["alexnet_small", "alexnet32"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--on-paper", action="store_true",
                   help="print the bytes and times for the paper's AlexNet on GPUs instead")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-parallel", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.on_paper:
        return on_paper()
    if args.worker:
        result = measure(args.models[0], args.batch_sizes[0], args.steps, args.warmup,
                         args.data_parallel)
        if result["ranks"] == 1 or os.environ.get("OMPI_COMM_WORLD_RANK", "0") == "0":
            print(json.dumps(result), flush=True)
        return 0
    from ..machine import cores_available, cpu_name
    print(f"{cpu_name()}, {cores_available()} cores; load average before: "
          f"{os.getloadavg()[0]:.2f} (other programs' processes waiting for a core)")
    print(f"training step, Adam, NumPy: 1 process x {args.ranks} BLAS threads against "
          f"{args.ranks} ranks x 1 thread (data parallel, MPI); best of {args.rounds} "
          f"alternating rounds of {args.steps} steps")
    print(f"{'model':<14}{'batch':>6}{'1x1 img/s':>10}{f'1x{args.ranks} img/s':>10}{f'{args.ranks} ranks img/s':>15}"
          f"{'ratio':>7}{'all-reduce ms':>15}{'of step':>9}{'alone ms':>10}{'grad MB':>9}")
    for model_name in args.models:
        for batch in args.batch_sizes:
            runs = {"1x1": (1, 1), "1xN": (1, None), "N": (args.ranks, None)}
            best = dict.fromkeys(runs)
            for _ in range(args.rounds):
                for key, (ranks, threads) in runs.items():    # alternating: 1x1, 1xN, N, ...
                    r = run_one(model_name, batch, args, ranks, threads)
                    if best[key] is None or r["images_per_s"] > best[key]["images_per_s"]:
                        best[key] = r
            single, one, many = best["1x1"], best["1xN"], best["N"]
            print(f"{model_name:<14}{batch:>6}{single['images_per_s']:>10.0f}"
                  f"{one['images_per_s']:>10.0f}"
                  f"{many['images_per_s']:>15.0f}{many['images_per_s'] / one['images_per_s']:>7.2f}"
                  f"{many['allreduce_ms']:>15.2f}{many['allreduce_ms'] / many['step_ms']:>9.0%}"
                  f"{many['allreduce_alone_ms']:>10.2f}{one['gradient_bytes'] / 1e6:>9.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
