"""The benchmark command: how fast a training step runs, where the time goes,
and how that compares with PyTorch on the same machine.

    python -m tinyalexnet bench --model alexnet32 --batch-size 64 --compare torch
    python -m tinyalexnet.bench --model alexnet --batch-size 128 --backend cupy --compare torch

What it measures, and how:

* **images/s**: a training step is forward, softmax cross-entropy, backward and
  the SGD update, on a random batch.  After ``--warmup`` untimed steps, each of
  ``--steps`` steps is timed alone; the median step time gives images/s.  On
  the GPU, work is queued asynchronously, so the clock is read only after
  ``backend.synchronize`` (the same for PyTorch: ``torch.cuda.synchronize``).
* **time per layer**: a few extra steps run layer by layer with a timestamp
  between layers (CUDA events on the GPU, so the queue is never drained
  mid-step).  They are separate from the timed steps, which carry no
  instrumentation.
* **peak memory**: on the GPU, the high-water mark of bytes handed out by the
  CuPy memory pool during a step, against PyTorch's ``max_memory_allocated``;
  the pools' reserved totals are shown too.  On the CPU, each framework runs
  two steps in a fresh process (this command again, with ``--memory-probe``)
  and we report its peak resident memory minus the resident memory after its
  imports: parameters, gradients, optimizer state, batch and the step's
  temporaries.  How each is read: ``machine.py``.
* ``--compare torch`` (PyTorch is optional; ``torch_twin.py`` is the one module
  that imports it): the same network is built with ``torch.nn`` from our
  weights.  Before any timing, both run in eval mode, where dropout is the
  identity: the logits must agree in the benchmark's dtype, and logits and
  every gradient in float64 (``torch_twin.check_outputs`` gives the tolerances
  and why).  Then the two frameworks' steps alternate, ours, theirs, theirs,
  ours..., so that noise from other programs falls on both, and the ratio
  tinyalexnet / PyTorch is printed.
* **other programs' load**: the report says how busy other programs kept the
  CPUs while timing (Linux); above 5% the numbers are not to be trusted.
* **NaN checks**: a step is timed as training runs it, with every layer's
  NaN/inf input check on NumPy and without on CuPy
  (``backend.check_finite_default``); ``--check-finite on|off`` overrides.

NumPy's matrix products run in OpenBLAS, which picks its kernels for the CPU it
detects; the environment variable ``OPENBLAS_CORETYPE`` overrides that choice.
The report says which kernel is active, because it can change the result by a
factor of two (see BENCHMARKS.md).

On the GPU, float32 matrix products may use TF32 tensor cores (10-bit
mantissas inside the product: faster, about 3 significant digits).  ``--tf32
on|off`` (default off) sets it explicitly and identically on both sides: in
CuPy through ``backend.set_tf32`` (CuPy itself reads ``CUPY_TF32`` only once, at
its first float32 product, so the environment variable is overridden and does
not matter), in PyTorch through ``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` (cuDNN's convolutions use TF32 by default:
left alone, PyTorch would run TF32 convolutions against our float32 ones).
The report reads each setting back from the library.  On the CPU there is no
TF32 and the option changes nothing.

This file is the command: its options, and ``run``, which measures
(``bench_measure.py``: runners, timers, plain records) and reports
(``bench_report.py``: the tables and the JSON), one part after the other.
"""
import argparse
import sys

from . import backend, bench_data, machine
from .bench_measure import (OursRunner, build_model, describe, layer_times, peak_memory,
                            step_times, torch_runner)
from .bench_report import Report
from .errors import TinyAlexNetError
from .models import MODELS, model_name
from .torch_twin import check_outputs


def add_arguments(parser):
    """The options of ``bench``, added to an argparse parser."""
    parser.add_argument("--model", type=model_name, choices=sorted(MODELS), default="alexnet32",
                        help="network to time (default: alexnet32)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (CUDA GPU) (default: numpy)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first: caches, pools, kernel compilation (default: 2)")
    parser.add_argument("--compare", choices=["torch"], default=None,
                        help="also time the same network in PyTorch and print the ratio")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="parameter and activation dtype (default: float32)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="outputs of the last layer (default: the model's, 1000 or 10)")
    parser.add_argument("--layer-steps", type=int, default=3,
                        help="extra instrumented steps for the per-layer times; 0 skips them")
    parser.add_argument("--cache-cols", choices=["on", "off"], default=None,
                        help="set Conv2d.cache_cols in every conv layer (default: the layers' own)")
    # Winograd (see layers/winograd.py and bench_conv.py)
    parser.add_argument("--conv", choices=["winograd", "im2col"], default=None,
                        help="3x3 stride-1 conv layers: Winograd F(2x2, 3x3) or im2col "
                             "(default: Conv2d.use_winograd)")
    parser.add_argument("--tf32", choices=["on", "off"], default="off",
                        help="GPU: let float32 matrix products and convolutions use TF32 tensor "
                             "cores, in both frameworks alike (default: off)")
    parser.add_argument("--check-finite", nargs="?", const="on", choices=["on", "off"],
                        default=None,
                        help="every layer's NaN/inf input check (default: as training runs on "
                             "the backend: on for numpy, off for cupy, where each check waits "
                             "for the device)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's threads (default: as many as NumPy's BLAS uses)")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch (default: 0)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results to PATH as JSON")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="also time reading batches from this store or image folder, and "
                             "say whether the input or the model limits training "
                             "(bench_data.py)")
    # Internal: measure one framework's peak memory in a fresh process (see _memory_probe).
    parser.add_argument("--memory-probe", choices=["ours", "torch"], default=None,
                        help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------- CPU memory
# Options that do not change what one step holds in memory; every other option of
# add_arguments reaches the memory probe as it was given (see _probe_argv).
NOT_FOR_THE_PROBE = {"steps", "warmup", "layer_steps", "compare", "json", "no_memory",
                     "memory_probe", "threads"}


def _probe_argv(args, framework, threads):
    """The command line that re-runs this benchmark as a memory probe of ``framework``."""
    argv = ["-m", "tinyalexnet.bench", "--memory-probe", framework]
    for action in add_arguments(argparse.ArgumentParser())._actions:
        value = getattr(args, action.dest, None)
        if (not action.option_strings or action.dest in NOT_FOR_THE_PROBE
                or value is None or value == action.default):
            continue
        option = action.option_strings[-1]
        argv += [option] if action.nargs == 0 else [option, str(value)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv


def _memory_probe(args):
    """In the fresh process: build one framework, run two steps, print its memory as JSON."""
    if args.memory_probe == "torch":
        import torch  # noqa: F401  (the library's own footprint is not the step's)
    before = machine.rss_bytes()
    if args.memory_probe == "torch":
        model, num_classes = build_model(args)          # the weights to copy, then dropped
        runner = torch_runner(args, model, num_classes, args.threads)
        del model
    else:
        runner = OursRunner(args)
    machine.report_peak_rss(runner.step, before)
    return 0


def cpu_peak_memory(args, framework, threads):
    """Peak resident bytes of two training steps of ``framework`` in a fresh process,
    above what the process held after its imports; None where that cannot be read."""
    return machine.peak_rss_in_fresh_process(_probe_argv(args, framework, threads), framework)


# ---------------------------------------------------------------------------- the command
def _check_args(args):
    for name in ("batch_size", "steps"):
        if getattr(args, name) < 1:
            raise TinyAlexNetError(f"bench: --{name.replace('_', '-')} must be at least 1, "
                                   f"got {getattr(args, name)}")
    if args.warmup < 0 or args.layer_steps < 0:
        raise TinyAlexNetError(f"bench: --warmup and --layer-steps must be 0 or more, "
                               f"got {args.warmup} and {args.layer_steps}")


def run(args):
    """Run the benchmark described by parsed ``args``; print the report; return the exit code."""
    if args.memory_probe:
        return _memory_probe(args)
    _check_args(args)
    gpu = args.backend == "cupy"
    if gpu:
        backend.set_tf32(args.tf32 == "on")       # before the first product is timed
    blas_threads, blas_line = machine.blas_info()
    threads = args.threads or blas_threads or machine.cores_available()
    runners = [OursRunner(args)]
    if args.compare == "torch":
        runners.append(torch_runner(args, runners[0].model, runners[0].num_classes, threads))
    report = Report(args)
    report.setup(describe(args, runners, blas_threads, blas_line))
    ok = True
    if args.compare == "torch":
        ok, numbers, lines = check_outputs(*runners, args.dtype, tf32=gpu and args.tf32 == "on")
        report.agreement(numbers, lines)
    times = step_times(runners, args)
    memory = None
    if not args.no_memory:
        memory = peak_memory(runners, gpu, lambda which: cpu_peak_memory(args, which, threads))
    report.speed(times, memory)
    if args.layer_steps:
        report.layers(layer_times(runners[0], args.layer_steps))
    # Another measurement joins here: a bench_measure function, then a Report method.
    if args.data:        # the input pipeline's images/s beside training's (bench_data.py)
        report.results["data"] = bench_data.beside_training(
            args, report.results["images_per_s"]["tinyalexnet"])
    report.write_json(args.json)
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyalexnet.bench",
                                     description="Time training steps of a tinyalexnet model.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TinyAlexNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
