"""Winograd F(2x2, 3x3) against im2col, side by side: multiplications, time, float32 error.

    python -m tinyalexnet.bench_conv --model alexnet32 --batch-size 64
    python -m tinyalexnet.bench_conv --model alexnet --batch-size 16 --backend cupy

For every 3x3 stride-1 convolution of the model (conv3-5 of AlexNet and of
alexnet32), with the input shape it has in the model:

* **multiplications** per image, counted (``layers.winograd.multiplications``):
  im2col's product against Winograd's element-wise stage (16 instead of 36 per
  2x2 outputs and channel pair, less where an odd map size leaves half-empty
  tiles) and its transforms, written as dense products;
* **time** of forward + backward, im2col and Winograd alternating (one, the
  other, the other, the one, ...) so that other programs' load falls on both;
  the median of each, the median ratio and its spread over the pairs;
* **float32 error**: max |y - y64| / max |y64| of the output and of dx and dW, each
  path in float32 against im2col in float64.

Then whole training steps (forward, loss, backward, SGD update) of the model
with ``Conv2d.use_winograd`` on and off, alternating, as in ``bench``.  The
report says how busy other programs kept the CPUs meanwhile.
"""
import argparse
import statistics
import sys

from . import backend
from .backend import numpy as np
from .bench_measure import OursRunner, alternating
from .errors import TinyAlexNetError
from .machine import OtherLoad, blas_info, device_line, load_line
from .layers import Conv2d
from .layers.winograd import multiplications
from .models import MODELS, get_model, model_name


def add_arguments(parser):
    parser.add_argument("--model", type=model_name, choices=sorted(MODELS), default="alexnet32",
                        help="network whose 3x3 layers are measured (default: alexnet32)")
    parser.add_argument("--batch-size", type=int, default=64, help="images (default: 64)")
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (CUDA GPU) (default: numpy)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed pairs per layer and for the whole step (default: 7)")
    parser.add_argument("--no-step", action="store_true",
                        help="skip the whole-training-step comparison")
    parser.add_argument("--seed", type=int, default=0, help="weights and data (default: 0)")
    return parser


def conv_inputs(model):
    """[(name, layer, (C, H, W))] for every Conv2d of ``model``, with its input shape."""
    found, shape = [], tuple(model.input_shape)
    for name, layer in model.layers.items():
        if isinstance(layer, Conv2d):
            found.append((name, layer, shape))
        shape = layer.output_shape(shape)
    return found


def _rel(a, ref):
    a = backend.as_numpy(a).astype(np.float64)
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def _twin(layer, winograd, dtype, name):
    """A copy of ``layer`` (same weights), on im2col or on Winograd, in ``dtype``."""
    conv = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.groups, rng=0)
    conv.load_state_dict(layer.state_dict())
    conv.use_winograd = winograd
    conv.check_finite = False
    conv.to(name, dtype)
    return conv


def measure_layer(layer, in_shape, args, xp):
    """Times, errors and counts of one 3x3 layer, both ways; a dict."""
    rng = np.random.default_rng(args.seed + 1)
    N = args.batch_size
    x64 = rng.standard_normal((N,) + in_shape)
    out_shape = layer.output_shape(in_shape)
    dout64 = rng.standard_normal((N,) + out_shape)
    # float32 error, against im2col in float64 (computed on the host: the reference)
    ref = _twin(layer, False, "float64", "numpy")
    y_ref = ref.forward(x64)
    dx_ref = ref.backward(dout64)
    dW_ref = ref.grads["weight"]
    x = backend.to_backend(x64.astype(np.float32), args.backend)
    dout = backend.to_backend(dout64.astype(np.float32), args.backend)
    result = {"error": {}}
    paths = {"im2col": _twin(layer, False, "float32", args.backend),
             "winograd": _twin(layer, True, "float32", args.backend)}
    for key, conv in paths.items():
        y = conv.forward(x)
        dx = conv.backward(dout)
        result["error"][key] = (_rel(y, y_ref), _rel(dx, dx_ref),
                                _rel(conv.grads["weight"], dW_ref))
    # time: forward + backward, the two paths alternating
    sync = lambda: backend.synchronize(xp)          # noqa: E731

    def step(conv):
        return lambda: (conv.forward(x), conv.backward(dout))

    for conv in paths.values():                       # warm-up
        step(conv)()
    result["times"] = alternating({key: (step(conv), sync) for key, conv in paths.items()},
                                  args.repeats)
    result["counts"] = multiplications(in_shape, layer.out_channels, layer.padding,
                                       layer.groups, batch=N)
    return result


def measure_step(args):
    """Whole training steps with Conv2d.use_winograd off and on (bench's --conv), alternating."""
    runners = {conv: OursRunner(argparse.Namespace(
        model=args.model, batch_size=args.batch_size, backend=args.backend, dtype="float32",
        num_classes=None, seed=args.seed, cache_cols=None, conv=conv, check_finite="off"))
        for conv in ("im2col", "winograd")}
    for r in runners.values():
        r.step()
        r.step()
        r.sync()
    return alternating({key: (r.step, r.sync) for key, r in runners.items()}, args.repeats)


def _ratios(times):
    """im2col time / Winograd time of each pair: above 1, Winograd is faster."""
    return [a / b for a, b in zip(times["im2col"], times["winograd"])]


def _spread(values):
    return f"{min(values):.2f}-{max(values):.2f}"


def print_counts(results, N):
    """The multiplications table: im2col's against Winograd's, per image."""
    print("\nmultiplications per image, forward (millions); ratio = im2col / Winograd")
    print(f"{'layer':7s}{'C->F, HxW, groups':22s}{'im2col':>9s}{'elementwise':>13s}"
          f"{'transforms':>12s}{'ratio (elem.)':>15s}{'ratio (all)':>13s}")
    for name, layer, (C, H, W), r in results:
        c = r["counts"]
        trans = c["winograd"] - c["elementwise"]
        print(f"{name:7s}{f'{C}->{layer.out_channels}, {H}x{W}, g{layer.groups}':22s}"
              f"{c['direct'] / N / 1e6:9.1f}{c['elementwise'] / N / 1e6:13.1f}"
              f"{trans / N / 1e6:12.2f}{c['direct'] / c['elementwise']:15.2f}"
              f"{c['direct'] / c['winograd']:13.2f}")


def print_times(results, other_load):
    """The time and float32 error table, per layer."""
    print("\nforward + backward, ms (median); speed-up = im2col time / Winograd time, "
          "median and spread over the pairs")
    print(f"{'layer':7s}{'im2col':>10s}{'Winograd':>10s}{'speed-up':>10s}{'spread':>12s}"
          f"   float32 error (out / dx / dW): im2col, Winograd")
    for name, layer, shape, r in results:
        t = r["times"]
        ratios = _ratios(t)
        e = r["error"]
        fmt = lambda v: " / ".join(f"{a:.1e}" for a in v)       # noqa: E731
        print(f"{name:7s}{statistics.median(t['im2col']) * 1e3:10.1f}"
              f"{statistics.median(t['winograd']) * 1e3:10.1f}"
              f"{statistics.median(ratios):10.2f} {_spread(ratios):>11s}"
              f"   {fmt(e['im2col'])};  {fmt(e['winograd'])}")
    if other_load is not None:
        print(load_line(other_load))


def print_step(args, times, other_load):
    """The whole-training-step line."""
    ratios = _ratios(times)
    print(f"\nwhole training step of {args.model}, batch {args.batch_size} "
          f"(forward, loss, backward, SGD):")
    print(f"  im2col everywhere {statistics.median(times['im2col']) * 1e3:.1f} ms, "
          f"Winograd in the 3x3 layers {statistics.median(times['winograd']) * 1e3:.1f} ms: "
          f"speed-up {statistics.median(ratios):.2f} (spread {_spread(ratios)})")
    if other_load is not None:
        print(load_line(other_load))


def run(args):
    if args.batch_size < 1 or args.repeats < 1:
        raise TinyAlexNetError(f"bench_conv: --batch-size and --repeats must be at least 1, "
                               f"got {args.batch_size} and {args.repeats}")
    xp = backend.get_backend(args.backend)
    threads, blas = blas_info()
    model = get_model(args.model, seed=args.seed)
    layers = [(n, layer, s) for n, layer, s in conv_inputs(model)
              if layer.kernel_size == (3, 3) and layer.stride == 1]
    print(f"Winograd F(2x2, 3x3) vs im2col: {args.model}, batch {args.batch_size}, float32, "
          f"backend {args.backend}, {args.repeats} alternating pairs")
    print(f"device: {device_line(args.backend, threads)}")
    if args.backend == "numpy":
        print(blas)
    if not layers:
        print(f"{args.model} has no 3x3 stride-1 convolution")
        return 0

    load = OtherLoad().start()
    results = [(name, layer, shape, measure_layer(layer, shape, args, xp))
               for name, layer, shape in layers]
    layer_load = load.stop()
    print_counts(results, args.batch_size)
    print_times(results, layer_load)
    if not args.no_step:
        load = OtherLoad().start()
        times = measure_step(args)
        print_step(args, times, load.stop())
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyalexnet.bench_conv",
                                     description="Winograd F(2x2, 3x3) vs im2col: "
                                                 "multiplications, time, float32 error.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TinyAlexNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
