"""The GPU path, end to end: every place tinyalexnet meets CuPy, run through the real code.

Each test takes ``device_name`` (real CuPy where a GPU exists, the strict stand-in of
``strict_cupy.py`` everywhere) or ``standin`` (the stand-in only, where host reads are
counted exactly).  Results are compared with the same computation on NumPy; on the
stand-in the arithmetic *is* NumPy's, so they agree exactly, on a GPU to float32
rounding.  "Reads" are device-to-host copies, each a wait for the GPU.
"""
import copy
import json
import re

import numpy as np
import pytest
from PIL import Image

import strict_cupy
from tinyalexnet import backend, bench, checkpoint, plots
from tinyalexnet import transforms as T
from tinyalexnet.backend import as_numpy
from tinyalexnet.cli import main
from tinyalexnet.datasets import ArrayDataset, load_dataset
from tinyalexnet.errors import ShapeError, TinyAlexNetError
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                                ReLU, SoftmaxCrossEntropy, ZeroPad2d)
from tinyalexnet.layers.naive import maxpool2d_naive
from tinyalexnet.layers.tanh import Tanh
from tinyalexnet.models import get_model
from tinyalexnet.optim import SGD, Adam
from tinyalexnet.config import make_config
from tinyalexnet.datasets.split import split_validation
from tinyalexnet.metrics import RunningMeter, evaluate
from tinyalexnet.stopping import Interrupted
from tinyalexnet.train import Trainer


def stripes(n, seed, classes=4, size=28):
    """Grey images whose class is the row of a bright stripe (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, 1, size, size))
    for k in range(4):
        images[np.arange(n), 0, 3 + 5 * labels + k, 4:24] += 150
    return ArrayDataset(images.astype(np.uint8), labels, [f"class{k}" for k in range(classes)],
                        name="stripes")


def colour(n, seed, size):
    """RGB noise images of one side ``size`` (for the pipeline's colour policies)."""
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, 3, size, size)).astype(np.uint8),
                        rng.integers(0, 3, n), ["a", "b", "c"], name=f"colour{size}")


@pytest.fixture(scope="module")
def data():
    train, val = split_validation(stripes(160, 0), 0.2, seed=0)   # 128 / 32: 4 steps an epoch
    return train, val, stripes(60, 1)


def config(**kw):
    options = dict(epochs=2, batch_size=32, augment=True, log_every=2, eval_batch_size=64,
                   backend="cupy")
    options.update(kw)
    return make_config(**options)


def trainer(data, out, cfg=None, **kw):
    return Trainer(cfg or config(), out, datasets=data, progress=False, log=None, **kw)


def rel_error(a, b):
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def close(on_standin):
    """The agreement to demand of device vs NumPy: exact on the stand-in (NumPy's own
    arithmetic), float32 rounding on a GPU (sums taken in another order)."""
    return 0.0 if on_standin else 1e-4


def same_weights(a, b, tol=0.0):
    for (name, p, _), (_, q, _) in zip(a.named_parameters(), b.named_parameters()):
        assert rel_error(p, q) <= tol, name


# ----------------------------------------------------------------------------- layers

LAYERS = {   # layer factory, input shape
    "conv 3x3/2 groups 2": (lambda: Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rng=0),
                            (2, 4, 9, 9)),
    "conv 5x5 pad 2": (lambda: Conv2d(3, 4, 5, padding=2, rng=1), (2, 3, 8, 8)),
    "relu": (ReLU, (2, 3, 4, 4)),
    "tanh": (Tanh, (2, 3, 4, 4)),
    "lrn": (LocalResponseNorm, (2, 7, 4, 4)),
    "maxpool 3/2": (lambda: MaxPool2d(3, 2), (2, 3, 9, 9)),
    "maxpool 17/1 (int32 arg-max)": (lambda: MaxPool2d(17, 1), (1, 2, 19, 19)),
    "dropout (training)": (lambda: Dropout(0.5, seed=3), (4, 10)),
    "linear": (lambda: Linear(10, 5, rng=2), (4, 10)),
    "flatten": (Flatten, (2, 3, 2, 2)),
    "zeropad": (lambda: ZeroPad2d(2), (2, 3, 4, 4)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_layer_forward_and_backward_matches_numpy(device_name, on_standin, no_sync,
                                                        kind, dtype):
    make, shape = LAYERS[kind]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    host, device = make().to("numpy", dtype), make().to(device_name, dtype)
    device.set_check_finite(False)          # the trainer's setting on a GPU
    y = host.forward(x)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = host.backward(dout)
    with no_sync():                         # forward and backward never wait for the device
        y_dev = device.forward(backend.as_cupy(x))
        dx_dev = device.backward(backend.as_cupy(dout))
    tol = close(on_standin) if dtype == "float32" else (0.0 if on_standin else 1e-12)
    assert backend.backend_of(y_dev) == "cupy" and y_dev.dtype == y.dtype
    assert rel_error(y_dev, y) <= tol and rel_error(dx_dev, dx) <= tol
    for (name, _, g), (_, _, g_dev) in zip(host.named_parameters(), device.named_parameters()):
        assert rel_error(g_dev, g) <= tol, name


def test_maxpool_wide_window_keeps_int32_arg_max_and_routes_the_gradient(backend_name):
    """Past 16x16 windows the arg-max no longer fits a byte: the int32 path, against
    loops over the windows (distinct values: each window has one maximum)."""
    N, C, H, W, k = 1, 2, 18, 19, 17
    x = np.random.default_rng(4).permutation(N * C * H * W).astype(np.float32).reshape(N, C, H, W)
    dout = np.random.default_rng(5).standard_normal((N, C, 2, 3)).astype(np.float32)
    want = np.zeros_like(x)
    for c in range(C):
        for i in range(2):
            for j in range(3):
                window = x[0, c, i:i + k, j:j + k]
                r, q = np.unravel_index(np.argmax(window), window.shape)
                want[0, c, i + r, j + q] += dout[0, c, i, j]
    pool = MaxPool2d(k, 1)
    y = pool.forward(backend.to_backend(x, backend_name))
    assert pool._cache[-1].dtype == np.int32              # (out_shape, fast, x_shape, argmax)
    assert np.array_equal(as_numpy(y), maxpool2d_naive(x, k, 1))
    dx = as_numpy(pool.backward(backend.to_backend(dout, backend_name)))
    np.testing.assert_allclose(dx, want, rtol=0, atol=1e-6)    # overlaps add in another order


@pytest.mark.parametrize("labels_on", ["host", "device"])
def test_loss_forward_and_backward_match_numpy(device_name, on_standin, labels_on):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    host, device = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    loss = host.forward(logits, labels)
    y = labels if labels_on == "host" else backend.as_cupy(labels)
    loss_dev = device.forward(backend.as_cupy(logits), y)
    assert backend.backend_of(loss_dev) == "cupy" and loss_dev.shape == ()
    assert rel_error(loss_dev, loss) <= close(on_standin)
    assert rel_error(device.backward(), host.backward()) <= close(on_standin)


# ----------------------------------------------------------------------------- training steps

STEPS = [("small", 8, "adam"), ("alexnet32", 4, "sgd"), ("alexnet", 2, "sgd")]


@pytest.mark.parametrize("name, batch, optimizer", STEPS)
def test_a_training_step_of_each_model_matches_numpy_and_reads_nothing(
        device_name, on_standin, no_sync, data, tmp_path, name, batch, optimizer):
    """The Trainer's own step (pipeline, forward, loss, backward, update, running sums),
    on the device inside no_sync(), against the same step written out on NumPy from a
    copy of the initial weights.  alexnet takes the 28x28 stripes upsampled to 227x227
    (the "upsample" pipeline) at batch 2."""
    t = trainer(data, tmp_path, config(model=name, batch_size=batch, optimizer=optimizer))
    c = t.config
    model = copy.deepcopy(t.model).to("numpy")
    opt = (SGD(model, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
           if optimizer == "sgd" else Adam(model, lr=c.lr, weight_decay=c.weight_decay))
    meter = t.meter = RunningMeter(t.xp)
    images, labels = data[0].get_batch(np.arange(batch))
    with no_sync():
        t._train_step(0, images, labels)
    assert t.model.xp is backend.cupy and model.xp is np
    assert (t.state.step, t.state.global_step) == (1, 1)

    # the step, on NumPy
    x = t.pipeline(images, train=True, rng=np.random.default_rng([c.seed, 0, 0]))
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), labels)
    model.backward(loss_fn.backward())
    opt.step()
    tol = close(on_standin)
    same_weights(t.model, model, tol)
    assert meter.read()["loss"] == pytest.approx(float(loss), rel=tol, abs=0)


# ----------------------------------------------------------------------------- the trainer

def test_fit_reads_the_device_only_to_show_the_loss_and_at_the_end_of_an_epoch(
        standin, data, tmp_path):
    """log_every=2: steps 2 and 4 of each 4-step epoch read the running sums (one read
    each), the others nothing; an epoch's end has no sums left to read (step 4 read
    them), evaluates with one read, and copies each array of the two checkpoints
    (last, best) to the host."""
    counts = []
    with standin.count_host_reads() as reads:
        t = trainer(data, tmp_path, config(log_every=2, optimizer="sgd"),
                    on_step=lambda tr: counts.append(reads.count))
        t.fit()
    per_step = np.diff([0] + counts).tolist()
    assert len(per_step) == 8
    assert per_step[:4] == [0, 1, 0, 1], reads
    assert per_step[5:] == [1, 0, 1], reads
    arrays = 2 * sum(1 for _ in t.model.named_parameters())           # weights + velocities
    assert per_step[4] == 1 + 2 * arrays, reads                       # last.npz and best.npz


def test_ctrl_c_and_resume_on_the_device_are_exact(device_name, on_standin, data, tmp_path):
    full = trainer(data, tmp_path / "full")
    full.fit()
    steps = full.steps_per_epoch

    def press_ctrl_c(t):
        if t.state.global_step == steps + 2:
            raise KeyboardInterrupt

    cut = trainer(data, tmp_path / "cut", on_step=press_ctrl_c)
    with pytest.raises(Interrupted, match="epoch 2, step 2/"):
        cut.fit()
    ck = checkpoint.load(tmp_path / "cut")
    assert all(isinstance(a, np.ndarray) for a in ck.weights.values())   # saved on the host
    resumed = Trainer.resume(tmp_path / "cut", datasets=data, progress=False, log=None)
    assert resumed.model.xp is backend.cupy and resumed.config.backend == "cupy"
    resumed.fit()
    same_weights(resumed.model, full.model)                 # one device, one order of sums
    drop = ("time", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in full.history]
    # the device's checkpoint, resumed on the CPU
    moved = Trainer.resume(tmp_path / "cut", overrides={"backend": "numpy"}, datasets=data,
                           progress=False, log=None)
    moved.fit()
    assert moved.model.xp is np and moved.epoch == 2
    if on_standin:          # on a GPU the two agree only to float32 rounding
        same_weights(moved.model, full.model)


def test_out_of_gpu_memory_stops_with_advice_and_keeps_the_checkpoint(device_name, data,
                                                                      tmp_path):
    t = trainer(data, tmp_path, config(epochs=1))
    t.fit()
    before = (tmp_path / "last.npz").read_bytes()
    resumed = Trainer.resume(tmp_path, overrides={"epochs": 2}, datasets=data, progress=False,
                             log=None)
    pool = backend.cupy.get_default_memory_pool()

    def squeeze(tr):                    # from step 3 on, nothing more fits on the device
        if tr.state.step == 2:
            pool.free_all_blocks()
            pool.set_limit(size=pool.used_bytes() + 1024)

    resumed.on_step = squeeze
    try:
        with pytest.raises(TinyAlexNetError) as info:
            resumed.fit()
    finally:
        pool.set_limit(size=0)
    message = str(info.value)
    assert "out of GPU memory at epoch 2, step 3 with batch size 32" in message
    assert "--batch-size, e.g. 16" in message and "\n" not in message
    assert (tmp_path / "last.npz").read_bytes() == before


# ----------------------------------------------------------------------------- evaluate, predict

@pytest.mark.parametrize("ten_crop", [False, True])
def test_evaluate_on_the_device_matches_numpy_and_reads_once(device_name, on_standin, data,
                                                             ten_crop):
    train, _, test = data
    model = get_model("small", num_classes=4, in_channels=1, seed=3)    # NaN checks on
    pipe = T.Pipeline.for_dataset(train, model.input_shape, augment=True)
    want = evaluate(model, test, pipe, batch_size=16, ten_crop=ten_crop)   # 4 batches
    model.to(device_name)
    with strict_cupy.count_host_reads() as reads:     # counts nothing on real CuPy
        got = evaluate(model, test, pipe, batch_size=16, ten_crop=ten_crop)
    assert got["loss"] == pytest.approx(want["loss"], rel=close(on_standin) or 1e-5)
    if on_standin:
        assert reads.count == 1, reads                 # the totals, once, whatever the batches
        assert np.array_equal(got["confusion"], want["confusion"])
        assert (got["top1_error"], got["top5_error"]) == (want["top1_error"], want["top5_error"])
    else:                                              # a near tie may flip on a GPU
        assert np.abs(got["confusion"] - want["confusion"]).sum() <= 2
    assert got["confusion"].dtype.kind == "i" and got["confusion"].sum() == len(test)
    assert all(m.check_finite for _, m in model.named_modules())   # the caller's setting is back


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    images, _ = load_dataset("fashion-mnist-subset", "test").get_batch(np.arange(3))
    paths = [str(folder / f"image{k}.png") for k in range(3)]
    for path, img in zip(paths, images):
        Image.fromarray(img[0]).save(path)
    return paths


QUICK = ["--limit", "100", "--batch-size", "45", "--no-progress"]


def test_cli_on_the_device_gives_the_numpy_results_and_reads_little(standin, tmp_path, capsys,
                                                                     pngs):
    """train / evaluate / predict / train --resume with --backend cupy print what the same
    commands print on NumPy (the stand-in's arithmetic is NumPy's); evaluate and predict
    read the device once."""
    outputs = {}
    for name in ("numpy", "cupy"):
        run = tmp_path / name
        assert main(["train", "--epochs", "1", "--out", str(run), "--backend", name,
                     *QUICK]) == 0
        result = json.loads((run / "test.json").read_text())
        with standin.count_host_reads() as eval_reads:
            assert main(["evaluate", str(run), "--backend", name, "--limit", "60",
                         "--batch-size", "25", "--ten-crop", "--no-progress"]) == 0
        with standin.count_host_reads() as predict_reads:
            assert main(["predict", str(run / "best.npz"), *pngs, "--backend", name]) == 0
        assert main(["train", "--resume", str(run), "--epochs", "2", "--backend", name,
                     "--no-progress"]) == 0
        history = json.loads((run / "history.json").read_text())
        printed = re.sub(r"\d+\.\d s +\d+ img/s", "TIME", capsys.readouterr().out)
        printed = printed.replace(str(run), "RUN").replace(f"{name} backend", "BACKEND")
        printed = printed.replace("  (includes CuPy's kernel compilation)", "")  # GPU epoch 1
        outputs[name] = (result, printed, [h["val_loss"] for h in history])
        for png in ("history.png", "confusion_matrix.png"):
            assert Image.open(run / png).size[0] > 100
    assert outputs["cupy"] == outputs["numpy"]
    assert eval_reads.count == 1, eval_reads                    # 3 batches of ten crops
    assert predict_reads.count == 1, predict_reads              # the probabilities


def test_predict_and_evaluate_stop_on_non_finite_outputs(backend_name, tmp_path, pngs, capsys):
    model = get_model("small", num_classes=10, in_channels=1, seed=0)
    model["fc8"].params["bias"][...] = np.nan
    pipe = T.Pipeline.for_dataset(load_dataset("fashion-mnist-subset", "test"), (1, 32, 32))
    meta = checkpoint.model_meta(model, "small")
    meta.update(pipeline=pipe.config(), classes=[str(k) for k in range(10)],
                config={"dataset": "fashion-mnist-subset"})
    checkpoint.save(tmp_path / "nan.npz", model, meta)
    for command in (["predict", str(tmp_path / "nan.npz"), pngs[0]],
                    ["evaluate", str(tmp_path / "nan.npz"), "--limit", "20", "--no-progress"]):
        assert main(command + ["--backend", backend_name]) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "NaN or infinite" in err and "\n" not in err


# ----------------------------------------------------------------------------- plots, bench

def test_plots_of_a_run_trained_on_the_device(device_name, data, tmp_path):
    t = trainer(data, tmp_path, config(epochs=1))
    t.fit()
    weight = t.model["conv1"].params["weight"]
    assert backend.backend_of(weight) == "cupy"
    assert np.array_equal(plots.kernel_grid(weight), plots.kernel_grid(as_numpy(weight)))
    plots.plot_kernels(weight, tmp_path / "kernels.png")
    result = t.evaluate()
    plots.plot_confusion_matrix(backend.as_cupy(result["confusion"]), t.classes,
                                tmp_path / "confusion.png")
    for png in ("kernels.png", "confusion.png", "history.png"):
        assert Image.open(tmp_path / png).size[0] > 100, png


def _bench_args(*argv):
    import argparse
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(["--backend", "cupy", "--model", "small", "--batch-size", "2",
                              *argv])


def test_bench_runner_on_the_device(device_name, no_sync):
    runner = bench.OursRunner(_bench_args())
    runner.step()
    runner.sync()
    with no_sync():                          # a timed step must not wait for the device
        runner.step()
    rows = runner.layer_times(1)             # CUDA events between layers
    assert [r[0] for r in rows] == list(runner.model.layers) + ["loss", "sgd update"]
    assert all(f >= 0 and b >= 0 for _, _, f, b in rows)
    pool = backend.cupy.get_default_memory_pool()
    in_use = pool.used_bytes()
    peak, held = runner.peak_memory_gpu()
    params = sum(p.nbytes for _, p, _ in runner.model.named_parameters())
    assert in_use >= 3 * params                      # weights, gradients, velocities stay
    shape, largest = runner.model.input_shape, 0     # the step's largest activation
    for layer in runner.model:
        shape = layer.output_shape(shape)
        largest = max(largest, 2 * 4 * int(np.prod(shape)))
    assert peak - in_use >= largest and held >= peak


def test_bench_command_on_the_device(device_name, capsys, tmp_path):
    argv = ["--steps", "1", "--warmup", "1", "--layer-steps", "1", "--json",
            str(tmp_path / "b.json")]
    assert bench.run(_bench_args(*argv)) == 0
    out = capsys.readouterr().out
    name = backend.cupy.cuda.runtime.getDeviceProperties(0)["name"]
    assert f"device: GPU {name.decode() if isinstance(name, bytes) else name}" in out
    assert "peak memory (pool)" in out and "memory reserved" in out
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["backend"] == "cupy" and result["images_per_s"]["tinyalexnet"] > 0


# ----------------------------------------------------------------------------- input pipeline

POLICIES = [   # data set, model input, lighting, the policy the pipeline must choose
    (lambda: stripes(6, 2), (1, 32, 32), False, "pad"),
    (lambda: stripes(3, 2), (1, 227, 227), False, "upsample"),
    (lambda: colour(6, 3, 36), (3, 32, 32), True, "crop"),
    (lambda: colour(2, 4, 300), (3, 227, 227), True, "downsample"),
]


@pytest.mark.parametrize("make, shape, lighting, policy", POLICIES,
                         ids=[p[3] for p in POLICIES])
def test_pipeline_on_the_device_matches_numpy(device_name, on_standin, no_sync, make, shape,
                                              lighting, policy):
    ds = make()
    pipe = T.Pipeline.for_dataset(ds, shape, augment=True, lighting=lighting)
    assert pipe.policy == policy and pipe.lighting == lighting
    images, _ = ds.get_batch(np.arange(len(ds)))
    xp = backend.cupy
    tol = 0.0 if on_standin else 1e-5
    for train in (True, False):
        host = pipe(images, train=train, rng=np.random.default_rng(5))
        with no_sync():
            dev = pipe(images, train=train, rng=np.random.default_rng(5), xp=xp)
        assert backend.backend_of(dev) == "cupy" and dev.dtype == np.float32
        assert np.abs(as_numpy(dev) - host).max() <= tol, train
    with no_sync():
        views = pipe.ten_crop(images, xp)
    assert np.abs(as_numpy(views) - pipe.ten_crop(images)).max() <= tol


def test_pipeline_keeps_a_device_batch_on_the_device(device_name):
    ds = stripes(4, 3)
    pipe = T.Pipeline.for_dataset(ds, (1, 32, 32))
    images, _ = ds.get_batch(np.arange(4))
    dev = pipe(backend.as_cupy(images), train=False)          # no xp: where the images are
    assert backend.backend_of(dev) == "cupy"
    assert np.array_equal(as_numpy(dev), pipe(images, train=False))
    assert backend.backend_of(pipe.ten_crop(backend.as_cupy(images))) == "cupy"


def test_crop_offsets_on_the_device_are_a_clear_error(device_name):
    x = backend.as_cupy(np.zeros((2, 1, 8, 8), np.float32))
    top = backend.as_cupy(np.array([0, 1]))
    with pytest.raises(ShapeError, match="crop: .*host") as info:
        T.crop(x, top, np.array([0, 1]), (4, 4))
    assert "\n" not in str(info.value)
