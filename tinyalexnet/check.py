"""``python -m tinyalexnet check``: does this machine compute what tinyalexnet needs?

Run it after installing CuPy, before training anything::

    python -m tinyalexnet check --backend cupy

It prints five parts, as they run:

1. **device**: what the backend computes on (GPU name, memory, CUDA runtime and
   driver, CuPy and NumPy versions; on NumPy the CPU and its BLAS).
2. **gradients**: every kind of layer, forward and backward in float64 on the
   backend, against central differences (``tinyalexnet.gradcheck``), with the
   test suite's bounds: 1e-9 for the layers that are linear around the point
   checked (the difference quotient is then exact up to rounding), 1e-7 for
   the smooth ones (tanh, LRN, softmax).
3. **one training step of each model** (forward, loss, backward, the paper's
   SGD) in float32 on the backend, against the same step in float64 on NumPy
   from the same weights and batch.  See ``STEP_BOUND`` for the agreement asked
   and why.
4. **kernels** (GPU only): every CUDA kernel (``tinyalexnet/kernels/``: the
   optimizers' updates, ReLU, dropout, LRN, max pooling, im2col, col2im, the loss, the
   top-k counts, the input pipeline's crop)
   against the array code it replaces, on random values, and both timed.
5. **speed**: images/s of a training step, one line (``bench`` says more).

Exit status 0 when every check holds; 1 when one fails (each failure is named
at the end); 2, with the one-line reason, when the backend cannot be used.
"""
import copy
import time

from . import backend, machine, metrics, transforms
from .backend import numpy as np
from .errors import TinyAlexNetError
from .gradcheck import check_layer, check_loss
from .layers import (BatchNorm2d, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                     ReLU, SoftmaxCrossEntropy, Tanh, ZeroPad2d)
from .models import MODELS, get_model
from .models import model_name as canonical_name
from .optim import SGD, Adam

LINEAR = (1e-3, 1e-9)   # (step h, bound): layers linear around the point checked
SMOOTH = (1e-6, 1e-7)   # tanh, LRN, softmax: the O(h^2) error of a central difference

# float32 against float64, as |got - ref| / |ref| over a whole tensor (not elementwise:
# in float32 a value within rounding of a ReLU's kink or a max-pool tie can send one
# element's gradient another way, which is right in both and moves the norm by little).
# float32 keeps 24 bits (u = 6e-8); a sum of K terms is typically off by sqrt(K) u,
# and a step chains ~20 layers with sums of up to ~10^4 terms, forward and back.
# Measured on NumPy (OpenBLAS): 4e-7..7e-7 for logits and loss, at most 1.1e-6 for a
# gradient, in all three models.  The bounds leave a factor of ~100-1000 for another
# library's summation order (cuBLAS splits sums differently) and are still far below
# what a real mistake gives (a wrong index, scale or race: 1e-2 and more).  TF32
# (~3 significant digits) would not pass: it is switched off while checking.
STEP_BOUND = {"output": 1e-4, "gradient": 1e-3}
STEP_BATCH = {"alexnet_small": 8, "alexnet32": 8, "alexnet": 2}
# model, batch, warm-up steps, timed steps of the speed line
SPEED = {"numpy": ("alexnet_small", 64, 1, 3), "cupy": ("alexnet", 128, 3, 10)}


def add_arguments(parser):
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (CUDA GPU) (default: numpy)")
    parser.add_argument("--models", default=",".join(STEP_BATCH),
                        help=f"models to step, comma-separated (default: {','.join(STEP_BATCH)})")
    parser.add_argument("--speed-model", type=canonical_name, choices=sorted(MODELS), default=None,
                        help="model of the speed line (default: alexnet_small on numpy, alexnet "
                             "on cupy)")
    parser.add_argument("--speed-batch", type=int, default=None,
                        help="batch of the speed line (default: 64 on numpy, 128 on cupy)")
    return parser


def _why(err):
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


class Report:
    """Collects pass/fail lines; prints each as it comes."""

    def __init__(self):
        self.failures, self.count = [], 0

    def section(self, title):
        print(f"\n{title}", flush=True)

    def line(self, ok, text, failure=None):
        self.count += 1
        print(f"  {'ok  ' if ok else 'FAIL'}  {text}", flush=True)
        if not ok:
            self.failures.append(failure or text)


# ---------------------------------------------------------------------------- 2. gradients
def gradient_cases():
    """(name, layer, input on the host, (h, bound)) for every kind of layer."""
    rng = np.random.default_rng(0)

    def randn(*shape, scale=1.0):
        return rng.standard_normal(shape) * scale

    def distinct(*shape, gap=0.01):
        # all different, at least gap apart and gap/2 from 0: a step h < gap/2 never
        # crosses a ReLU's kink or changes a max-pool's winner
        n = int(np.prod(shape))
        return rng.permutation((np.arange(n) - n // 2 + 0.5) * gap).reshape(shape)

    return [
        ("Conv2d 3x2, stride 2, padding 1, groups 2",
         Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2, rng=0), randn(2, 4, 7, 6), LINEAR),
        ("Conv2d 5x5, stride 3, padding 2", Conv2d(3, 5, 5, stride=3, padding=2, rng=1),
         randn(1, 3, 9, 8), LINEAR),
        ("ReLU", ReLU(), distinct(2, 3, 4, 5), LINEAR),
        ("Tanh", Tanh(), randn(2, 3, 4), SMOOTH),
        ("LocalResponseNorm (the paper's constants)", LocalResponseNorm(5, 1e-4, 0.75, 2.0),
         randn(2, 8, 3, 3, scale=30.0), SMOOTH),
        ("BatchNorm2d (training: the batch's statistics)", BatchNorm2d(4), randn(3, 4, 3, 2) + 1.0,
         SMOOTH),
        ("MaxPool2d 3x3, stride 2 (overlapping)", MaxPool2d(3, 2), distinct(2, 3, 7, 9), LINEAR),
        ("ZeroPad2d", ZeroPad2d(2), randn(2, 3, 3, 4), LINEAR),
        ("Dropout p=0.5 (training)", Dropout(0.5, seed=3), randn(4, 10), LINEAR),
        ("Flatten", Flatten(), randn(2, 3, 2, 2), LINEAR),
        ("Linear", Linear(7, 5, rng=2), randn(3, 7), LINEAR),
    ]


def check_gradients(report, name):
    report.section(f"gradients: float64 on {name} against central differences")
    for label, layer, x, (h, bound) in gradient_cases():
        try:
            layer.to(name, dtype="float64")
            result = check_layer(layer, backend.to_backend(x, name), h=h, bound=bound)
            errors = ", ".join(f"{k} {e:.1e}" for k, e in result.errors.items())
            report.line(result.passed, f"{label}: {errors} (bound {bound:.0e})",
                        f"gradient of {label}: {errors}, bound {bound:.0e}")
        except Exception as err:
            report.line(False, f"{label}: raised {_why(err)}")
    logits = np.random.default_rng(1).standard_normal((4, 10)) * 3
    labels = np.array([0, 3, 9, 3])
    h, bound = SMOOTH
    try:
        result = check_loss(SoftmaxCrossEntropy(), backend.to_backend(logits, name), labels,
                            h=h, bound=bound)
        e = result.errors["logits"]
        report.line(result.passed, f"SoftmaxCrossEntropy: logits {e:.1e} (bound {bound:.0e})",
                    f"gradient of SoftmaxCrossEntropy: {e:.1e}, bound {bound:.0e}")
    except Exception as err:
        report.line(False, f"SoftmaxCrossEntropy: raised {_why(err)}")


# ---------------------------------------------------------------------------- 3. one step
def one_step(model, name, dtype, x, y):
    """One SGD step of ``model`` on backend ``name`` in ``dtype``: {tensor: float64 host array}."""
    model.to(name, dtype=dtype).train()
    model.set_check_finite(False)                     # as the trainer runs on a GPU
    loss_fn = SoftmaxCrossEntropy().set_check_finite(False)
    optimizer = SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    logits = model.forward(backend.to_backend(x.astype(dtype), name))
    loss = loss_fn.forward(logits, y)
    model.backward(loss_fn.backward())
    optimizer.step()
    out = {"logits": logits, "loss": loss}
    for param, _, grad in model.named_parameters():
        out[f"{param} gradient"] = grad
        out[f"{param} SGD velocity"] = optimizer.state["velocity"][param]
    return {k: backend.as_numpy(v).astype(np.float64) for k, v in out.items()}


def relative(got, ref):
    """|got - ref| / |ref| (Euclidean norms over the whole tensor)."""
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def check_steps(report, name, models):
    report.section(f"one training step, float32 on {name} against float64 on NumPy "
                   f"(|got - ref| / |ref|; bounds {STEP_BOUND['output']:.0e} for logits and "
                   f"loss, {STEP_BOUND['gradient']:.0e} for gradients)")
    for model_name in models:
        batch = STEP_BATCH.get(model_name, 2)
        try:
            model = get_model(model_name, seed=0)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((batch,) + model.input_shape)
            y = rng.integers(0, model.output_shape(model.input_shape)[0], batch)
            ref = one_step(copy.deepcopy(model), "numpy", "float64", x, y)
            got = one_step(model, name, "float32", x, y)
            del model
            out = max(relative(got[k], ref[k]) for k in ("logits", "loss"))
            errs = {k: relative(got[k], ref[k]) for k in ref if k not in ("logits", "loss")}
            worst = max(errs, key=errs.get)
            finite = all(np.isfinite(v).all() for v in got.values())
            ok = finite and out <= STEP_BOUND["output"] and errs[worst] <= STEP_BOUND["gradient"]
            text = (f"{model_name} ({'x'.join(map(str, x.shape[1:]))}, batch {batch}): logits "
                    f"and loss {out:.1e}, worst of {len(errs)} gradients and velocities "
                    f"{errs[worst]:.1e} ({worst})" + ("" if finite else ", NOT FINITE"))
            report.line(ok, text, f"training step of {text}")
        except Exception as err:
            report.line(False, f"{model_name}: raised {_why(err)}")


# ---------------------------------------------------------------------------- 4. kernels
FUSED_BOUND = 1e-5    # float32, the same arithmetic in another order: a few ulps of the update
# A layer's kernels against its readable array code, |got - ref| / |ref| over each output and
# gradient: 0 where the kernel does the same operations in the same order (ReLU, dropout, max
# pooling: anything else is a mistake); a few ulps where sums or exp/pow differ in order or
# in library (a wrong index or scale gives 1e-2 and more).
KERNEL_BOUND = {"float32": 1e-5, "float64": 1e-12}
EXACT = {"float32": 0.0, "float64": 0.0}
# label, the layer, its input (batch 16 at alexnet32's sizes), its bound
KERNEL_LAYERS = [
    ("ReLU", lambda: ReLU(), (16, 96, 22, 22), EXACT),
    ("Dropout p=0.5", lambda: Dropout(0.5, seed=1), (16, 512), EXACT),
    ("MaxPool2d 3x3, stride 2 (ties included)", lambda: MaxPool2d(3, 2), (16, 96, 26, 26), EXACT),
    ("LocalResponseNorm", lambda: LocalResponseNorm(5, 1e-4, 0.75, 2.0), (16, 96, 12, 12),
     KERNEL_BOUND),
    ("Conv2d 5x5, padding 2, groups 2 (im2col, col2im)",
     lambda: Conv2d(32, 64, 5, padding=2, groups=2, rng=0), (16, 32, 12, 12), KERNEL_BOUND),
]
LOSS_CASES = [(64, 10), (64, 1000)]


def check_kernels(report, name):
    """Every kernel against the array code it replaces, on the backend's device."""
    report.section("kernels against the array code they replace")
    xp = backend.get_backend(name)
    if getattr(xp, "RawKernel", None) is None:
        print(f"  none on {name}: the array code is all there is")
        return
    for label, make, shape, bound in KERNEL_LAYERS:
        _check_layer_kernels(report, xp, name, label, make, shape, bound)
    for N, K in LOSS_CASES:
        _check_loss_kernels(report, xp, name, N, K)
        _check_topk_kernel(report, xp, N, K)
    _check_pipeline_kernel(report, xp)
    _check_optimizer_kernel(report, xp, name, "Adam", lambda m, f: Adam(m, weight_decay=5e-4,
                                                                          fused=f), ("m", "v"))
    _check_optimizer_kernel(report, xp, name, "SGD", lambda m, f: SGD(m, lr=0.01, fused=f),
                            ("velocity",))


def _layer_pass(layer, x, dout):
    out = layer.forward(x)
    return [out, layer.backward(dout)] + [g.copy() for g in layer.grads.values()]


def _worst(got, ref):
    """The largest |got - ref| / |ref| (max norms) over pairs of device arrays; inf for NaN."""
    worst = 0.0
    for a, b in zip(got, ref):
        a, b = backend.as_numpy(a).astype(np.float64), backend.as_numpy(b).astype(np.float64)
        e = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
        worst = max(worst, e if np.isfinite(e) else float("inf"))
    return worst


def _seconds(run, xp, repeat=5):
    run()                                    # compiled and warm
    backend.synchronize(xp)
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    backend.synchronize(xp)
    return (time.perf_counter() - start) / repeat


def _both_paths(make, name, dtype):
    """The layer twice, on ``name`` in ``dtype``: (kernel path, readable array code)."""
    layers = []
    for fast in (True, False):
        layer = make().to(name, dtype=dtype).set_check_finite(False)
        layer.fast = fast
        layers.append(layer)
    return layers


def _check_layer_kernels(report, xp, name, label, make, shape, bound):
    try:
        rng = np.random.default_rng(4)
        errors, times = {}, None
        for dtype in ("float32", "float64"):
            x = rng.standard_normal(shape)
            if "MaxPool" in label:
                x = np.round(x * 2) / 2          # many windows with two equal maxima
            x = xp.asarray(x.astype(dtype))
            kernel, readable = _both_paths(make, name, dtype)
            dout = xp.asarray(rng.standard_normal(kernel.forward(x).shape).astype(dtype))
            kernel, readable = _both_paths(make, name, dtype)     # the same dropout mask
            errors[dtype] = _worst(_layer_pass(kernel, x, dout), _layer_pass(readable, x, dout))
            if dtype == "float32":
                times = [_seconds(lambda layer=layer: _layer_pass(layer, x, dout), xp)
                         for layer in (kernel, readable)]
        ok = all(errors[d] <= bound[d] for d in errors)
        text = (f"{label}: kernels {errors['float32']:.1e} / {errors['float64']:.1e} from the "
                f"array code in float32 / float64 (bound {_bound_text(bound)}); forward and "
                f"backward of {'x'.join(map(str, shape))} {1000 * times[0]:.2f} ms with kernels, "
                f"{1000 * times[1]:.2f} ms as array code")
        report.line(ok, text, f"kernels of {label}: {errors} from the array code")
    except Exception as err:
        report.line(False, f"kernels of {label}: raised {_why(err)}")


def _bound_text(bound):
    return "0, exactly" if not any(bound.values()) else \
        f"{bound['float32']:.0e} / {bound['float64']:.0e}"


def _check_loss_kernels(report, xp, name, N, K):
    label = f"SoftmaxCrossEntropy, {N} x {K}"
    try:
        rng = np.random.default_rng(5)
        errors = {}
        for dtype in ("float32", "float64"):
            logits = xp.asarray((rng.standard_normal((N, K)) * 10).astype(dtype))
            labels = rng.integers(0, K, N)
            kernel, readable = _both_paths(SoftmaxCrossEntropy, name, dtype)

            def run(loss_fn):
                return [loss_fn.forward(logits, labels), loss_fn.backward()]
            errors[dtype] = _worst(run(kernel), run(readable))
            if dtype == "float32":
                times = [_seconds(lambda f=f: run(f), xp) for f in (kernel, readable)]
        ok = all(errors[d] <= KERNEL_BOUND[d] for d in errors)
        text = (f"{label}: kernels {errors['float32']:.1e} / {errors['float64']:.1e} from the "
                f"array code in float32 / float64 (bound {_bound_text(KERNEL_BOUND)}); loss and "
                f"gradient {1000 * times[0]:.2f} ms with kernels, {1000 * times[1]:.2f} ms as "
                "array code")
        report.line(ok, text, f"kernels of {label}: {errors} from the array code")
    except Exception as err:
        report.line(False, f"kernels of {label}: raised {_why(err)}")


def _check_topk_kernel(report, xp, N, K):
    """The top-k counts' kernel (``metrics.below_true`` on the device) against the array
    code on the same scores, copied to the host: whole numbers, so equal or wrong."""
    label = f"top-k counts, {N} x {K}"
    try:
        rng = np.random.default_rng(6)
        wrong = {}
        for dtype in ("float32", "float64"):
            scores = np.round(rng.standard_normal((N, K)) * 4).astype(dtype)    # many ties
            labels = rng.integers(0, K, N)
            got = metrics.below_true(xp.asarray(scores), xp.asarray(labels))
            wrong[dtype] = int((backend.as_numpy(got) != metrics.below_true(scores, labels)).sum())
            if dtype == "float32":
                ms = 1000 * _seconds(lambda: metrics.below_true(xp.asarray(scores),
                                                                 xp.asarray(labels)), xp)
        report.line(not any(wrong.values()),
                    f"{label}: the kernel's counts differ from the array code's in "
                    f"{wrong['float32']} / {wrong['float64']} of {N} rows in float32 / float64 "
                    f"(0, exactly); {ms:.2f} ms with the copy in",
                    f"kernel of {label}: {wrong} rows differ from the array code")
    except Exception as err:
        report.line(False, f"kernel of {label}: raised {_why(err)}")


def _check_pipeline_kernel(report, xp):
    """The input pipeline's crop kernel: a training batch of 64 RGB 32x32 images (random
    crops, reflections, lighting) and its test view, against the same pipeline on NumPy."""
    label = "input pipeline, 64 x 3 x 32 x 32"
    try:
        rng = np.random.default_rng(7)
        images = rng.integers(0, 256, (64, 3, 32, 32)).astype(np.uint8)
        pipe = transforms.Pipeline((3, 32, 32), (3, 32, 32), [0.5] * 3, [0.25] * 3,
                                   augment=True, lighting=True, eigval=[0.2, 0.02, 0.002],
                                   eigvec=np.eye(3))
        worst = 0.0
        for train in (True, False):
            got = pipe(images, train=train, rng=np.random.default_rng(8), xp=xp)
            want = pipe(images, train=train, rng=np.random.default_rng(8))
            worst = max(worst, _worst([got], [want]))
        ms = 1000 * _seconds(lambda: pipe(images, train=True, rng=np.random.default_rng(8),
                                          xp=xp), xp)
        report.line(worst == 0.0,
                    f"{label}: the crop kernel {worst:.1e} from NumPy's pipeline (0, exactly), "
                    f"training view and test view; {ms:.2f} ms a training batch with the copy in",
                    f"kernel of the {label}: {worst:.1e} from NumPy's pipeline")
    except Exception as err:
        report.line(False, f"kernel of the {label}: raised {_why(err)}")


def _check_optimizer_kernel(report, xp, name, label, make, slots):
    """The fused update against the array code: alexnet32's 16 parameters, 3 steps."""
    try:
        plain = get_model("alexnet32", seed=0).to(name)
        fast = copy.deepcopy(plain)
        rng = np.random.default_rng(3)
        start = {k: backend.as_numpy(p).copy() for k, p, _ in plain.named_parameters()}
        optimizers = (make(plain, False), make(fast, True))
        for _ in range(3):
            for (_, _, ga), (_, _, gb) in zip(plain.named_parameters(), fast.named_parameters()):
                ga[...] = xp.asarray(rng.standard_normal(ga.shape).astype(ga.dtype))
                gb[...] = ga
            for optimizer in optimizers:
                optimizer.step()
        worst, where = 0.0, ""
        for (k, pa, _), (_, pb, _) in zip(plain.named_parameters(), fast.named_parameters()):
            a, b = backend.as_numpy(pa), backend.as_numpy(pb)
            e = float(np.linalg.norm(b - a) / max(np.linalg.norm(a - start[k]), 1e-30))
            for slot in slots:
                sa = backend.as_numpy(optimizers[0].state[slot][k])
                sb = backend.as_numpy(optimizers[1].state[slot][k])
                e = max(e, relative(sb, sa))
            e = e if np.isfinite(e) else float("inf")      # NaN compares as nothing
            if e >= worst:
                worst, where = e, k
        times = [_update_seconds(xp, optimizer) for optimizer in optimizers]
        report.line(worst <= FUSED_BOUND,
                    f"{label}, one kernel per parameter: {worst:.1e} from the array code ({where}; "
                    f"bound {FUSED_BOUND:.0e}); update of alexnet32's {len(start)} parameters "
                    f"{1000 * times[0]:.2f} ms as array code, {1000 * times[1]:.2f} ms fused",
                    f"fused {label} kernel: {worst:.1e} from the array code in {where}")
    except Exception as err:
        report.line(False, f"fused {label} kernel: raised {_why(err)}")


def _update_seconds(xp, optimizer, repeat=20):
    optimizer.step()                         # compiled and warm
    backend.synchronize(xp)
    start = time.perf_counter()
    for _ in range(repeat):
        optimizer.step()
    backend.synchronize(xp)
    return (time.perf_counter() - start) / repeat


# ---------------------------------------------------------------------------- 5. speed
def images_per_second(name, model_name, batch, warmup, steps):
    """Training steps of ``model_name`` in float32 on ``name``: images per second.

    The device is drained once before the clock starts and once at the end, never
    in between, so on a GPU the host queues step after step as in training."""
    xp = backend.get_backend(name)
    model = get_model(model_name, seed=0).to(name)
    checks = backend.check_finite_default(name)       # the NaN checks as training has them
    model.set_check_finite(checks)
    loss_fn = SoftmaxCrossEntropy().set_check_finite(checks)
    optimizer = SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(2)
    x = backend.to_backend(rng.standard_normal((batch,) + model.input_shape)
                           .astype(np.float32), name)
    y = rng.integers(0, model.output_shape(model.input_shape)[0], batch)

    def step():
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()

    for _ in range(warmup):
        step()
    backend.synchronize(xp)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    backend.synchronize(xp)
    return batch * steps / (time.perf_counter() - start)


# ---------------------------------------------------------------------------- the command
def run(args):
    models = [canonical_name(m.strip()) for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise TinyAlexNetError(f"check: unknown model {unknown[0]!r} in --models: expected "
                               f"some of {', '.join(MODELS)}")
    if args.speed_batch is not None and args.speed_batch < 1:
        raise TinyAlexNetError(f"check: --speed-batch must be at least 1, got {args.speed_batch}")
    name = args.backend
    backend.get_backend(name)            # BackendUnavailable (exit 2) says why, in one line
    report = Report()
    print(f"tinyalexnet check, backend {name}")
    report.section("device")
    for what, text in backend.device_info(name).items():
        print(f"  {what}: {text}")
    if name == "numpy":
        print(f"  CPU: {machine.cpu_name()}")
        print(f"  {machine.blas_info()[1]}")
    tf32_before = None
    if name == "cupy":
        # TF32 would round the float32 products to ~3 digits: the step comparison would
        # measure TF32, not the code.  Off while checking, as it was after.
        tf32_before = backend.tf32_enabled()
        backend.set_tf32(False)
        print(f"  TF32: off during the checks (it was {'on' if tf32_before else 'off'})")
    try:
        check_gradients(report, name)
        check_steps(report, name, models)
        check_kernels(report, name)
        report.section("speed")
        model_name, batch, warmup, steps = SPEED[name]
        model_name, batch = args.speed_model or model_name, args.speed_batch or batch
        try:
            ips = images_per_second(name, model_name, batch, warmup, steps)
            print(f"  {model_name}, batch {batch}, float32 training steps: {ips:,.0f} images/s "
                  f"({steps} steps after {warmup} warm-up; per layer: python -m tinyalexnet bench "
                  f"--backend {name})")
        except Exception as err:
            report.line(False, f"speed: {model_name} raised {_why(err)}")
    finally:
        if tf32_before is not None:
            backend.set_tf32(tf32_before)
    if report.failures:
        print(f"\ncheck: {len(report.failures)} of {report.count} checks FAILED on {name}:")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print(f"\ncheck: all {report.count} checks hold on {name}")
    return 0
