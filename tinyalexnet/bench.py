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
"""
import argparse
import datetime
import json
import statistics
import sys
import time

from . import backend, bench_data, machine
from .backend import numpy as np
from .errors import TinyAlexNetError
from .layers import Conv2d, SoftmaxCrossEntropy
from .models import MODELS, get_model, model_name
from .optim import SGD
from .runfolder import write_text_atomic
from .torch_twin import TorchRunner, check_outputs


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


# ---------------------------------------------------------------------------- clocks
class Clock:
    """Timestamps: host time on the CPU, CUDA events in the GPU's stream.

    ``mark()`` returns a timestamp; ``seconds(a, b)`` the time between two.  On
    the GPU a mark is only recorded into the queue of work, so marking between
    layers does not make the host wait; ``seconds`` waits for ``b``.
    """

    def __init__(self, xp):
        self.xp = xp
        self.gpu = xp is not np

    def mark(self):
        if self.gpu:
            event = self.xp.cuda.Event()
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, a, b):
        if self.gpu:
            b.synchronize()
            return self.xp.cuda.get_elapsed_time(a, b) / 1000.0
        return b - a


def _timed(step, sync):
    """Seconds one call of ``step`` takes, with the device drained before and after."""
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- the two frameworks
def _random_batch(args, input_shape, num_classes):
    """A float batch and integer labels, on the host, the same for both frameworks."""
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch_size,) + tuple(input_shape)).astype(args.dtype)
    y = rng.integers(0, num_classes, args.batch_size)
    return x, y


def check_finite(args):
    """Are the per-layer NaN checks on?  ``--check-finite``, or else training's default
    on this backend (``backend.check_finite_default``)."""
    if args.check_finite is None:
        return backend.check_finite_default(args.backend)
    return args.check_finite in ("on", True)


def _build_ours(args):
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = get_model(args.model, seed=args.seed, **kwargs)
    num_classes = model.output_shape(model.input_shape)[0]
    return model, num_classes


class OursRunner:
    """tinyalexnet: a model, its loss, the paper's SGD, a batch on the device."""

    name = "tinyalexnet"

    def __init__(self, args):
        self.xp = backend.get_backend(args.backend)
        self.model, self.num_classes = _build_ours(args)
        self.model.to(args.backend, dtype=args.dtype)
        if args.cache_cols is not None:
            for _, layer in self.model.named_modules():
                if isinstance(layer, Conv2d):
                    layer.cache_cols = args.cache_cols == "on"
        if getattr(args, "conv", None) is not None:                  # Winograd: --conv
            for _, layer in self.model.named_modules():
                if isinstance(layer, Conv2d):
                    layer.use_winograd = args.conv == "winograd"
        # The NaN checks as training has them on this backend, so that the step timed
        # is the step trained (on the GPU each check would wait for the device).
        self.check_finite = check_finite(args)
        self.model.set_check_finite(self.check_finite)
        self.loss = SoftmaxCrossEntropy().set_check_finite(self.check_finite)
        self.optimizer = SGD(self.model, lr=0.01, momentum=0.9, weight_decay=5e-4)
        x, self.y = _random_batch(args, self.model.input_shape, self.num_classes)
        self.x = backend.to_backend(x, args.backend)   # the batch moves to the device once
        # Labels stay on the host: the loss checks their range there, without a sync.

    def sync(self):
        backend.synchronize(self.xp)

    def step(self):
        logits = self.model.forward(self.x)
        self.loss.forward(logits, self.y)
        self.model.backward(self.loss.backward())
        self.optimizer.step()

    def layer_times(self, steps):
        """[(row, type, forward s, backward s)] per layer, then the loss and the update:
        medians over ``steps`` instrumented steps."""
        clock = Clock(self.xp)
        layers = list(self.model.layers.items())
        rows = [name for name, _ in layers] + ["loss", "sgd update"]
        samples = {row: ([], []) for row in rows}
        for _ in range(steps):
            marks = [clock.mark()]
            h = self.x
            for _, layer in layers:
                h = layer.forward(h)
                marks.append(clock.mark())
            self.loss.forward(h, self.y)
            d = self.loss.backward()
            marks.append(clock.mark())
            for _, layer in reversed(layers):
                d = layer.backward(d)
                marks.append(clock.mark())
            self.optimizer.step()
            marks.append(clock.mark())
            L = len(layers)
            for k, (name, _) in enumerate(layers):
                samples[name][0].append(clock.seconds(marks[k], marks[k + 1]))
                # backward of layer k runs between marks 2L - k and 2L - k + 1
                samples[name][1].append(clock.seconds(marks[2 * L - k], marks[2 * L - k + 1]))
            samples["loss"][0].append(clock.seconds(marks[L], marks[L + 1]))
            samples["loss"][1].append(0.0)
            samples["sgd update"][0].append(clock.seconds(marks[2 * L + 1], marks[2 * L + 2]))
            samples["sgd update"][1].append(0.0)
        types = dict((name, type(layer).__name__) for name, layer in layers)
        types.update({"loss": "SoftmaxCrossEntropy", "sgd update": "SGD"})
        return [(row, types[row], statistics.median(samples[row][0]),
                 statistics.median(samples[row][1])) for row in rows]

    def eval_pass(self, dtype, n):
        """Logits, loss and every parameter gradient of one eval-mode pass over the
        first ``n`` images, computed in ``dtype``; all as NumPy arrays."""
        own = next(iter(self.model.state_dict().values())).dtype
        self.model.to(dtype=dtype)                  # float32 -> float64 -> float32 is exact
        self.model.eval()
        x = self.x[:n].astype(dtype)
        logits = self.model.forward(x)
        loss = self.loss.forward(logits, self.y[:n])
        self.model.backward(self.loss.backward())
        grads = {name: backend.as_numpy(g) for name, _, g in self.model.named_parameters()}
        self.model.train()
        self.model.to(dtype=own)
        return backend.as_numpy(logits), float(backend.as_numpy(loss)), grads

    def peak_memory_gpu(self):
        """(peak bytes in use from the CuPy pool during one step, bytes the pool holds)."""
        self.sync()
        return machine.cupy_pool_peak(self.xp, lambda: (self.step(), self.sync()))



def _torch_runner(args, model, num_classes, threads):
    """``model``'s twin in PyTorch (see torch_twin.py), on the same batch as ours."""
    return TorchRunner(model, *_random_batch(args, model.input_shape, num_classes),
                       device="cuda" if args.backend == "cupy" else "cpu", dtype=args.dtype,
                       threads=threads, tf32=args.tf32 == "on", seed=args.seed)


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
        model, num_classes = _build_ours(args)          # the weights to copy, then dropped
        runner = _torch_runner(args, model, num_classes, args.threads)
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


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


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
    ours = OursRunner(args)
    runners = [ours]
    results = {"date": datetime.date.today().isoformat(), "model": args.model,
               "batch_size": args.batch_size, "backend": args.backend, "dtype": args.dtype,
               "steps": args.steps, "warmup": args.warmup,
               "device": machine.device_line(args.backend, blas_threads), "blas": blas_line}
    print(f"tinyalexnet bench: model {args.model}, batch {args.batch_size}, {args.dtype}, "
          f"backend {args.backend}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"device: {results['device']}")
    convs = [layer for _, layer in ours.model.named_modules() if isinstance(layer, Conv2d)]
    cached = sum(layer.cache_cols for layer in convs)
    results["cache_cols"] = f"{cached}/{len(convs)}"
    results["check_finite"] = ours.check_finite
    print(f"settings: im2col cols kept for backward in {cached} of {len(convs)} conv layers "
          f"(Conv2d.cache_cols), per-layer NaN checks {'on' if ours.check_finite else 'off'}")
    winograd = sum(layer.winograd_applies() for layer in convs)      # Winograd: --conv
    results["winograd_layers"] = f"{winograd}/{len(convs)}"
    print(f"          Winograd F(2x2, 3x3) in {winograd} of {len(convs)} conv layers "
          f"(Conv2d.use_winograd; the others: im2col)")
    if args.backend == "numpy":
        print(blas_line)
    ok = True
    results["tf32"] = {"tinyalexnet": "on" if backend.tf32_enabled() else "off"} if gpu else "n/a"
    if args.compare == "torch":
        theirs = _torch_runner(args, ours.model, ours.num_classes, threads)
        runners.append(theirs)
        torch = theirs.torch
        results["torch"] = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
        print(results["torch"])
        if gpu:
            results["tf32"]["PyTorch matmul"] = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
            results["tf32"]["PyTorch cuDNN"] = "on" if torch.backends.cudnn.allow_tf32 else "off"
    if gpu:
        print("TF32 (as each library reports it): " + ", ".join(
            f"{k} {v}" for k, v in results["tf32"].items()))
    else:
        print("TF32: not applicable on the CPU (float32 products are plain float32)")
    if args.compare == "torch":
        ok, results["check"], lines = check_outputs(ours, theirs, args.dtype,
                                                    tf32=gpu and args.tf32 == "on")
        print("\n".join(lines))

    # Warm up, then alternate: ours, theirs, theirs, ours, ... so that a burst of other
    # work on the machine lands on both and the ratio stays fair.
    for r in runners:
        for _ in range(args.warmup):
            r.step()
        r.sync()
    times = {r.name: [] for r in runners}
    load = machine.OtherLoad().start()
    for i in range(args.steps):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            times[r.name].append(_timed(r.step, r.sync))
    other_load = load.stop()
    results["other_load"] = other_load

    memory = {}
    if not args.no_memory:
        for r in runners:
            if args.backend == "cupy":
                memory[r.name] = r.peak_memory_gpu()
            else:
                framework = "ours" if r is ours else "torch"
                memory[r.name] = (cpu_peak_memory(args, framework, threads), None)

    print()
    header = f"{'':24s}{'tinyalexnet':>14s}"
    if len(runners) > 1:
        header += f"{'PyTorch':>14s}{'ratio':>9s}"
    print(header)
    med = {name: statistics.median(t) for name, t in times.items()}
    ips = {name: args.batch_size / med[name] for name in med}
    results["step_seconds"] = med
    results["images_per_s"] = ips
    results["step_seconds_all"] = times

    def row(label, values, fmt, ratio):
        line = f"{label:24s}" + "".join(f"{fmt(v):>14s}" for v in values)
        if ratio is not None:
            line += f"{ratio:>9.2f}"
        print(line)

    names = [r.name for r in runners]
    pair = len(runners) > 1
    row("step time (median)", [med[n] for n in names], lambda v: f"{v * 1000:.1f} ms", None)
    row("images/s", [ips[n] for n in names], lambda v: f"{v:.1f}",
        ips["tinyalexnet"] / ips["PyTorch"] if pair else None)
    if pair:
        results["ratio_images_per_s"] = ips["tinyalexnet"] / ips["PyTorch"]
    if memory:
        label = "peak memory (pool)" if args.backend == "cupy" else "peak memory (RSS)"
        peaks = [memory[n][0] for n in names]
        mem_ratio = (peaks[0] / peaks[1]) if pair and None not in peaks else None
        row(label, peaks, _mib, mem_ratio)
        if args.backend == "cupy":
            row("memory reserved", [memory[n][1] for n in names], _mib, None)
        results["peak_memory_bytes"] = {n: memory[n][0] for n in names}
        if mem_ratio is not None:
            results["ratio_peak_memory"] = mem_ratio
    if pair:
        print("ratio = tinyalexnet / PyTorch (images/s: above 1 is faster; memory: below 1 is less)")
    if other_load is not None:
        note = "" if other_load < 0.05 else "  -- too busy: timings unreliable, run again"
        print(f"other programs kept the CPUs {100 * other_load:.0f}% busy while timing{note}")

    if args.layer_steps:
        load = machine.OtherLoad().start()
        rows = ours.layer_times(args.layer_steps)
        layer_load = load.stop()
        total = sum(f + b for _, _, f, b in rows)
        print(f"\ntime per layer, tinyalexnet (median of {args.layer_steps} instrumented steps)")
        if layer_load is not None and layer_load >= 0.05:
            print(f"(other programs kept the CPUs {100 * layer_load:.0f}% busy meanwhile: "
                  "these times are not to be trusted)")
        print(f"{'layer':12s}{'type':22s}{'forward ms':>12s}{'backward ms':>13s}{'share':>8s}")
        for name, kind, f, b in rows:
            print(f"{name:12s}{kind:22s}{f * 1000:12.2f}{b * 1000:13.2f}"
                  f"{100 * (f + b) / total:7.1f}%")
        print(f"{'total':34s}{sum(r[2] for r in rows) * 1000:12.2f}"
              f"{sum(r[3] for r in rows) * 1000:13.2f}")
        results["layers"] = [{"layer": n, "type": k, "forward_s": f, "backward_s": b}
                             for n, k, f, b in rows]
    if args.data:
        results["data"] = bench_data.beside_training(args, ips["tinyalexnet"])
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=1))
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
