"""What the benchmark measures, and how: each function returns a plain record.

``bench.py`` is the command (its docstring says what each number means) and
``bench_report.py`` prints the records and writes the JSON; this file only
measures.  ``bench_conv.py`` uses the same timer and runner.

* ``timed`` and ``alternating``: one call timed with the device drained
  before and after; several steps timed in turn, the order reversed each
  round (a, b, b, a, a, b, ...) so that a burst of other work on the machine
  lands on all of them alike.
* ``Clock``: timestamps between layers (host time, or CUDA events on the GPU).
* ``OursRunner``: a training step of tinyalexnet, ready to time;
  ``torch_runner``: its twin in PyTorch (``torch_twin.py``).
* ``describe``, ``step_times``, ``peak_memory``, ``layer_times``: the records
  the report prints, in the order it prints them.
"""
import statistics
import time
from dataclasses import dataclass, field

from . import backend, machine
from .backend import numpy as np
from .layers import Conv2d, SoftmaxCrossEntropy
from .models import get_model
from .optim import SGD
from .torch_twin import TorchRunner


# ---------------------------------------------------------------------------- clocks
def timed(step, sync):
    """Seconds one call of ``step`` takes, with the device drained (``sync``) before and after."""
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def alternating(steps, repeats):
    """{name: [seconds of each call]}: each of ``steps`` ({name: (step, sync)}) timed
    ``repeats`` times, in turn, the order reversed every round."""
    times = {name: [] for name in steps}
    for i in range(repeats):
        for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            times[name].append(timed(*steps[name]))
    return times


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


# ---------------------------------------------------------------------------- the two frameworks
def random_batch(args, input_shape, num_classes):
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


def build_model(args):
    """The model ``args`` names (its weights from ``args.seed``) and its number of classes."""
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = get_model(args.model, seed=args.seed, **kwargs)
    return model, model.output_shape(model.input_shape)[0]


class OursRunner:
    """tinyalexnet: a model, its loss, the paper's SGD, a batch on the device."""

    name = "tinyalexnet"

    def __init__(self, args):
        self.xp = backend.get_backend(args.backend)
        self.model, self.num_classes = build_model(args)
        self.model.to(args.backend, dtype=args.dtype)
        for _, layer in self.model.named_modules():
            if isinstance(layer, Conv2d):
                if args.cache_cols is not None:
                    layer.cache_cols = args.cache_cols == "on"
                if getattr(args, "conv", None) is not None:          # Winograd: --conv
                    layer.use_winograd = args.conv == "winograd"
        # The NaN checks as training has them on this backend, so that the step timed
        # is the step trained (on the GPU each check would wait for the device).
        self.check_finite = check_finite(args)
        self.model.set_check_finite(self.check_finite)
        self.loss = SoftmaxCrossEntropy().set_check_finite(self.check_finite)
        self.optimizer = SGD(self.model, lr=0.01, momentum=0.9, weight_decay=5e-4)
        x, self.y = random_batch(args, self.model.input_shape, self.num_classes)
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


def torch_runner(args, model, num_classes, threads):
    """``model``'s twin in PyTorch (see torch_twin.py), on the same batch as ours."""
    return TorchRunner(model, *random_batch(args, model.input_shape, num_classes),
                       device="cuda" if args.backend == "cupy" else "cpu", dtype=args.dtype,
                       threads=threads, tf32=args.tf32 == "on", seed=args.seed)


# ---------------------------------------------------------------------------- the records
@dataclass
class Setup:
    """What is timed, and on what: the report's first lines."""
    device: str                 # machine.device_line
    blas: str                   # machine.blas_info's line
    convs: int                  # Conv2d layers in the model
    cached: int                 # ... of which keep im2col's cols for backward
    winograd: int               # ... of which run Winograd F(2x2, 3x3)
    check_finite: bool          # the per-layer NaN checks
    tf32: object                # "n/a" on the CPU, else {library: "on"/"off"} as each reports it
    torch: str = None           # "PyTorch <version>, <n> threads" with --compare torch


def describe(args, runners, blas_threads, blas_line):
    """The ``Setup`` of ``runners`` (ours first, then PyTorch's twin if any)."""
    ours = runners[0]
    convs = [layer for _, layer in ours.model.named_modules() if isinstance(layer, Conv2d)]
    setup = Setup(device=machine.device_line(args.backend, blas_threads), blas=blas_line,
                  convs=len(convs), cached=sum(layer.cache_cols for layer in convs),
                  winograd=sum(layer.winograd_applies() for layer in convs),
                  check_finite=ours.check_finite, tf32="n/a")
    gpu = args.backend == "cupy"
    if gpu:
        setup.tf32 = {"tinyalexnet": "on" if backend.tf32_enabled() else "off"}
    if len(runners) > 1:
        torch = runners[1].torch
        setup.torch = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
        if gpu:
            setup.tf32["PyTorch matmul"] = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
            setup.tf32["PyTorch cuDNN"] = "on" if torch.backends.cudnn.allow_tf32 else "off"
    return setup


@dataclass
class StepTimes:
    """Every timed step's seconds, per framework, and how busy other programs kept the CPUs."""
    seconds: dict               # {framework: [s, s, ...]}
    other_load: float = None    # machine.OtherLoad: 0..1, or None where unknown
    batch_size: int = 1

    @property
    def median(self):
        return {name: statistics.median(t) for name, t in self.seconds.items()}

    @property
    def images_per_s(self):
        return {name: self.batch_size / s for name, s in self.median.items()}


def step_times(runners, args):
    """``args.warmup`` untimed steps of each runner, then ``args.steps`` timed ones, alternating."""
    for r in runners:
        for _ in range(args.warmup):
            r.step()
        r.sync()
    load = machine.OtherLoad().start()
    seconds = alternating({r.name: (r.step, r.sync) for r in runners}, args.steps)
    return StepTimes(seconds, load.stop(), args.batch_size)


@dataclass
class Memory:
    """Peak memory of one step per framework: ``where`` "pool" (GPU) or "RSS" (CPU)."""
    where: str
    peak: dict                                  # {framework: bytes, or None where unreadable}
    reserved: dict = field(default_factory=dict)   # GPU: {framework: bytes the pool holds}


def peak_memory(runners, gpu, cpu_probe):
    """On the GPU, each runner's pool during one step; on the CPU, ``cpu_probe("ours"|"torch")``:
    the peak resident bytes of two steps in a fresh process (see bench.py)."""
    if gpu:
        pairs = {r.name: r.peak_memory_gpu() for r in runners}
        return Memory("pool", {n: p[0] for n, p in pairs.items()},
                      {n: p[1] for n, p in pairs.items()})
    return Memory("RSS", {r.name: cpu_probe("ours" if r is runners[0] else "torch")
                          for r in runners})


@dataclass
class LayerTimes:
    """Median forward and backward seconds of each layer, the loss and the update."""
    rows: list                  # [(row, type, forward s, backward s)]
    steps: int                  # instrumented steps
    other_load: float = None


def layer_times(runner, steps):
    """``runner.layer_times(steps)``, with how busy other programs kept the CPUs meanwhile."""
    load = machine.OtherLoad().start()
    rows = runner.layer_times(steps)
    return LayerTimes(rows, steps, load.stop())
