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
  CuPy memory pool during a step (a ``MemoryHook``), against PyTorch's
  ``max_memory_allocated``; the pools' reserved totals are shown too.  On the
  CPU, each framework runs two steps in a fresh process and we report its peak
  resident memory (VmHWM) minus the resident memory after its imports:
  parameters, gradients, optimizer state, batch and the step's temporaries.
* ``--compare torch`` (PyTorch is optional, imported only here): the same
  architecture is built with ``torch.nn`` from our weights (PyTorch's layouts,
  so they copy over as they are; LRN's alpha becomes alpha * size).  Before any
  timing, both run in eval mode, where dropout is the identity: the logits must
  agree in the benchmark's dtype, and logits and every gradient in float64 (see
  ``check_outputs`` for the tolerances and why).  Then the two frameworks'
  steps alternate, ours, theirs, theirs, ours..., so that noise from other
  programs falls on both, and the ratio tinyalexnet / PyTorch is printed.
  PyTorch runs as it is usually run: as many threads as NumPy's BLAS,
  ``ReLU(inplace=True)`` as in torchvision, ``zero_grad()`` and
  ``torch.optim.SGD``; on the GPU with ``cudnn.benchmark`` on.
* **other programs' load**: the report says how busy other programs kept the
  CPUs while timing (Linux); above 5% the numbers are not to be trusted.

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
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import OrderedDict

from . import backend
from .backend import numpy as np
from .errors import TinyAlexNetError
from .layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                     SoftmaxCrossEntropy, ZeroPad2d)
from .models import MODELS, get_model
from .optim import SGD

# Agreement demanded of PyTorch, as max|ours - theirs| / max|theirs| per tensor
# (see check_outputs).  float32 sums taken in another order differ by ~1e-6.
TOLERANCE = {"float32": {"output": 1e-4},
             "float64": {"output": 1e-10, "grad": 1e-8}}
# With TF32 on, each product rounds its operands to 11 significant bits (~5e-4), and
# the two frameworks round different sums: 1e-2 still catches a wrong computation.
TF32_OUTPUT_TOLERANCE = 1e-2


def add_arguments(parser):
    """The options of ``bench``, added to an argparse parser."""
    parser.add_argument("--model", choices=sorted(MODELS), default="alexnet32",
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
    parser.add_argument("--tf32", choices=["on", "off"], default="off",
                        help="GPU: let float32 matrix products and convolutions use TF32 tensor "
                             "cores, in both frameworks alike (default: off)")
    # Winograd (see layers/winograd.py and bench_conv.py)
    parser.add_argument("--conv", choices=["winograd", "im2col"], default=None,
                        help="3x3 stride-1 conv layers: Winograd F(2x2, 3x3) or im2col "
                             "(default: Conv2d.use_winograd)")
    parser.add_argument("--check-finite", action="store_true",
                        help="keep every layer's NaN/inf input check on (off by default: on the "
                             "GPU each check waits for the device)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's threads (default: as many as NumPy's BLAS uses)")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch (default: 0)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results to PATH as JSON")
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


class OtherLoad:
    """How busy *other* programs kept the CPUs between ``start()`` and ``stop()``.

    Linux only (``/proc/stat``): all CPUs' busy time minus this process's own,
    as a fraction of the CPUs' capacity over the interval.  Two cores shared with
    a busy neighbour make NumPy's two BLAS threads wait for each other, and a
    step can take ten times as long; the report flags timings taken that way.
    """

    def _read(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user, nice, system, irq, softirq, steal (a hypervisor's other guests count too)
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def start(self):
        self.begin = self._read()
        return self

    def stop(self):
        end = self._read()
        if self.begin is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.begin, end))
        cpus = os.cpu_count() or 1
        return max(0.0, (busy - own) / (wall * cpus))


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
        # The NaN check reads a flag back from the device at every layer and in the
        # loss: on the GPU a sync between forward and backward of every timed step.
        # The training loop on the GPU reads the running loss every 50 steps instead.
        self.model.set_check_finite(args.check_finite)
        self.loss = SoftmaxCrossEntropy().set_check_finite(args.check_finite)
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
        pool = self.xp.get_default_memory_pool()
        self.sync()

        class PeakHook(self.xp.cuda.MemoryHook):
            name = "tinyalexnet-bench-peak"

            def __init__(self, in_use):
                super().__init__()
                self.in_use = self.peak = in_use

            def malloc_postprocess(self, **kw):
                self.in_use += kw["mem_size"]
                self.peak = max(self.peak, self.in_use)

            def free_postprocess(self, **kw):
                self.in_use -= kw["mem_size"]

        hook = PeakHook(pool.used_bytes())
        with hook:
            self.step()
            self.sync()
        return hook.peak, pool.total_bytes()


class TorchRunner:
    """The same network, weights, batch and update rule in PyTorch."""

    name = "PyTorch"

    def __init__(self, args, ours_model, threads):
        try:
            import torch
        except ImportError as err:
            raise TinyAlexNetError(f"bench: --compare torch needs PyTorch, which is not "
                                   f"installed here ({err}); tinyalexnet itself does not") from None
        self.torch = torch
        torch.manual_seed(args.seed)
        if threads:
            torch.set_num_threads(threads)
        if args.backend == "cupy":
            if not torch.cuda.is_available():
                raise TinyAlexNetError("bench: --compare torch with --backend cupy needs a "
                                       "PyTorch built with CUDA; this one sees no GPU")
            self.device = torch.device("cuda")
            torch.backends.cudnn.benchmark = True     # cuDNN at its best: it picks its fastest kernels
            tf32 = args.tf32 == "on"                  # cuDNN's default is True: set it, both ways
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        else:
            self.device = torch.device("cpu")
        dtype = getattr(torch, args.dtype)
        self.model = to_torch(ours_model, torch).to(device=self.device, dtype=dtype)
        self.model.train()
        self.loss = torch.nn.CrossEntropyLoss()
        # torch's SGD folds lr in differently from the paper's rule; for a constant lr
        # the two give the same steps (see optim/sgd.py).
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                         weight_decay=5e-4)
        x, y = _random_batch(args, ours_model.input_shape,
                             ours_model.output_shape(ours_model.input_shape)[0])
        self.x = torch.from_numpy(x).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def step(self):
        self.optimizer.zero_grad()
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def eval_pass(self, dtype, n):
        torch = self.torch
        own = next(self.model.parameters()).dtype
        self.model.to(dtype=getattr(torch, dtype))
        self.model.eval()
        self.optimizer.zero_grad()
        logits = self.model(self.x[:n].to(getattr(torch, dtype)))
        loss = self.loss(logits, self.y[:n])
        loss.backward()
        grads = {name: p.grad.detach().cpu().numpy() for name, p in self.model.named_parameters()}
        self.optimizer.zero_grad()
        self.model.train()
        self.model.to(dtype=own)
        return logits.detach().cpu().numpy(), float(loss.detach()), grads

    def peak_memory_gpu(self):
        torch = self.torch
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        self.sync()
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def to_torch(model, torch):
    """A ``torch.nn.Sequential`` with the same layers, names and weights as ``model``."""
    nn = torch.nn
    modules = []
    for name, layer in model.layers.items():
        if isinstance(layer, Conv2d):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, groups=layer.groups)
        elif isinstance(layer, ReLU):
            m = nn.ReLU(inplace=True)          # as torchvision's AlexNet
        elif isinstance(layer, LocalResponseNorm):
            # PyTorch divides alpha by size; the paper (and we) do not.
            m = nn.LocalResponseNorm(layer.size, alpha=layer.alpha * layer.size,
                                     beta=layer.beta, k=layer.k)
        elif isinstance(layer, MaxPool2d):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, ZeroPad2d):
            m = nn.ZeroPad2d(layer.padding)
        elif isinstance(layer, Flatten):
            m = nn.Flatten()
        elif isinstance(layer, Linear):
            m = nn.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, Dropout):
            m = nn.Dropout(layer.p)
        else:
            raise TinyAlexNetError(f"bench: no PyTorch equivalent known for layer {name!r} "
                                   f"({type(layer).__name__})")
        modules.append((name, m))
    net = nn.Sequential(OrderedDict(modules))
    # Our layouts are PyTorch's, so the arrays copy over unchanged, name for name
    # (in our dtype, so that nothing is rounded on the way).
    state = {name: torch.from_numpy(backend.as_numpy(p)) for name, p in model.state_dict().items()}
    net.to(dtype=next(iter(state.values())).dtype)
    net.load_state_dict(state)
    return net


# ---------------------------------------------------------------------------- environment
def blas_info():
    """A line naming NumPy's BLAS, its kernel and its threads (threadpoolctl if present)."""
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    env = f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None, f"NumPy BLAS: unknown (install threadpoolctl to see it); {env}"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            kernel = info.get("architecture") or "?"
            text = (f"NumPy BLAS: {info.get('internal_api')} {info.get('version')}, "
                    f"kernel {kernel}, {info.get('num_threads')} threads; {env}")
            return info.get("num_threads"), text
    return None, f"NumPy BLAS: not found by threadpoolctl; {env}"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_line(args, threads):
    if args.backend == "cupy":
        info = backend.device_info("cupy")
        return (f"GPU {info['GPU']}, {info['memory']}; CUDA {info['CUDA']}; CuPy {info['CuPy']}, "
                f"NumPy {info['NumPy']}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {cpu_name()}, {cores} cores available, {threads or '?'} BLAS threads"


# ---------------------------------------------------------------------------- CPU memory
def _rss_bytes():
    """Resident memory of this process now (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _peak_rss_bytes():
    """The most resident memory this process has held.

    Linux: VmHWM, the high-water mark of this process's own address space.  (Not
    ``ru_maxrss``: after fork + exec it also counts what the *parent* held at the
    fork, here the benchmark with PyTorch loaded.)  Elsewhere: ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # macOS: bytes, Linux: KiB


def _reset_peak_rss():
    """Start VmHWM afresh from the current resident size (Linux 4.0+); False if we cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_probe(args):
    """Run in a fresh process: two steps of one framework, print its memory as JSON."""
    if args.memory_probe == "torch":
        import torch  # noqa: F401  (the library's own footprint is not the step's)
    before = _rss_bytes()
    if args.memory_probe == "torch":
        model, _ = _build_ours(args)          # the weights to copy, then dropped
        runner = TorchRunner(args, model, args.threads)
        del model
    else:
        runner = OursRunner(args)
    gc.collect()
    _reset_peak_rss()                         # forget the building, count the steps
    for _ in range(2):
        runner.step()
    print(json.dumps({"rss_before": before, "peak_rss": _peak_rss_bytes()}))
    return 0


def cpu_peak_memory(args, framework, threads):
    """Peak resident bytes of two training steps of ``framework`` in a fresh process,
    above what the process held after its imports; None where that cannot be read."""
    cmd = [sys.executable, "-m", "tinyalexnet.bench", "--memory-probe", framework,
           "--model", args.model, "--batch-size", str(args.batch_size), "--dtype", args.dtype,
           "--seed", str(args.seed)]
    if args.cache_cols is not None:
        cmd += ["--cache-cols", args.cache_cols]
    if args.conv is not None:                                        # Winograd: --conv
        cmd += ["--conv", args.conv]
    if args.check_finite:
        cmd += ["--check-finite"]
    if args.num_classes is not None:
        cmd += ["--num-classes", str(args.num_classes)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise TinyAlexNetError(f"bench: the memory probe for {framework} failed: "
                               f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rss_before"] is None:
        return None
    return result["peak_rss"] - result["rss_before"]


# ---------------------------------------------------------------------------- the command
def _check_args(args):
    for name in ("batch_size", "steps"):
        if getattr(args, name) < 1:
            raise TinyAlexNetError(f"bench: --{name.replace('_', '-')} must be at least 1, "
                                   f"got {getattr(args, name)}")
    if args.warmup < 0 or args.layer_steps < 0:
        raise TinyAlexNetError(f"bench: --warmup and --layer-steps must be 0 or more, "
                               f"got {args.warmup} and {args.layer_steps}")


def _rel_error(a, b):
    """max |a - b| / max |b|: how far ours is from PyTorch's, relative to its size."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_outputs(ours, theirs, dtype, n=8, tf32=False):
    """Does PyTorch compute what we compute?  Returns (ok, numbers, report lines).

    In eval mode (dropout is the identity), with the same weights and images:
    the logits and loss of the whole batch in the benchmark's dtype, then logits,
    loss and every gradient in float64 on the first ``n`` images.  Gradients are
    compared in float64 because in float32 a pre-activation within rounding of a
    ReLU's kink, or two near-equal values in a max-pool window, can route a
    gradient differently in the two frameworks: a legitimate difference of up to
    ~1e-2 that says nothing about correctness.  In float64 both agree to ~1e-14.
    """
    batch = ours.x.shape[0]
    o_logits, o_loss, _ = ours.eval_pass(dtype, batch)
    t_logits, t_loss, _ = theirs.eval_pass(dtype, batch)
    tol = TF32_OUTPUT_TOLERANCE if tf32 and dtype == "float32" else TOLERANCE[dtype]["output"]
    out_err = max(_rel_error(o_logits, t_logits), abs(o_loss - t_loss) / max(abs(t_loss), 1e-30))
    o64 = ours.eval_pass("float64", n)
    t64 = theirs.eval_pass("float64", n)
    tol64 = TOLERANCE["float64"]
    out64 = max(_rel_error(o64[0], t64[0]), abs(o64[1] - t64[1]) / max(abs(t64[1]), 1e-30))
    grad_errs = {name: _rel_error(o64[2][name], t64[2][name]) for name in o64[2]}
    worst = max(grad_errs, key=grad_errs.get)
    ok = out_err <= tol and out64 <= tol64["output"] and grad_errs[worst] <= tol64["grad"]
    lines = ["output check, eval mode (error = max|ours - PyTorch| / max|PyTorch|):",
             f"  {dtype} logits and loss, batch {batch}: {out_err:.1e} (tolerance {tol:.0e}"
             f"{', TF32' if tol == TF32_OUTPUT_TOLERANCE else ''})",
             f"  float64 logits and loss, {min(n, batch)} images: {out64:.1e} "
             f"(tolerance {tol64['output']:.0e})",
             f"  float64 gradients: worst {grad_errs[worst]:.1e} in {worst} "
             f"(tolerance {tol64['grad']:.0e})",
             f"  {'agree' if ok else 'DISAGREE: the timings below compare different computations'}"]
    numbers = {"output_error": out_err, "output_error_float64": out64,
               "grad_error_float64": grad_errs[worst], "grad_worst": worst, "ok": ok}
    return ok, numbers, lines


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
    blas_threads, blas_line = blas_info()
    threads = args.threads or blas_threads or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    ours = OursRunner(args)
    runners = [ours]
    results = {"date": datetime.date.today().isoformat(), "model": args.model,
               "batch_size": args.batch_size, "backend": args.backend, "dtype": args.dtype,
               "steps": args.steps, "warmup": args.warmup,
               "device": device_line(args, blas_threads), "blas": blas_line}
    print(f"tinyalexnet bench: model {args.model}, batch {args.batch_size}, {args.dtype}, "
          f"backend {args.backend}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"device: {results['device']}")
    convs = [layer for _, layer in ours.model.named_modules() if isinstance(layer, Conv2d)]
    cached = sum(layer.cache_cols for layer in convs)
    results["cache_cols"] = f"{cached}/{len(convs)}"
    results["check_finite"] = args.check_finite
    print(f"settings: im2col cols kept for backward in {cached} of {len(convs)} conv layers "
          f"(Conv2d.cache_cols), per-layer NaN checks {'on' if args.check_finite else 'off'}")
    winograd = sum(layer.winograd_applies() for layer in convs)      # Winograd: --conv
    results["winograd_layers"] = f"{winograd}/{len(convs)}"
    print(f"          Winograd F(2x2, 3x3) in {winograd} of {len(convs)} conv layers "
          f"(Conv2d.use_winograd; the others: im2col)")
    if args.backend == "numpy":
        print(blas_line)
    ok = True
    results["tf32"] = {"tinyalexnet": "on" if backend.tf32_enabled() else "off"} if gpu else "n/a"
    if args.compare == "torch":
        theirs = TorchRunner(args, ours.model, threads)
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
    load = OtherLoad().start()
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
        load = OtherLoad().start()
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
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
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
