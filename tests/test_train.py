"""The training loop: it learns, resumes exactly, and stops safely (Ctrl-C, NaN, a full disk)."""
import csv
import json
import signal

import numpy as np
import pytest

from tinyalexnet import backend, checkpoint
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.errors import NonFiniteError, TinyAlexNetError
from tinyalexnet.models import get_model
from tinyalexnet.checkpoint import RunState
from tinyalexnet.config import RECIPES, make_config
from tinyalexnet.datasets.split import split_validation
from tinyalexnet.metrics import RunningMeter, evaluate, log_softmax, topk_correct
from tinyalexnet.stopping import Interrupted
from tinyalexnet.train import Trainer
from tinyalexnet.transforms import Pipeline


def stripes(n, seed, classes=4, size=28):
    """Grey images whose class is the row of a bright stripe (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, 1, size, size))
    rows = 3 + 5 * labels
    for k in range(4):   # a 4-pixel-high stripe, at a slightly random column span
        images[np.arange(n), 0, rows + k, 4:24] += 150
    return ArrayDataset(images.astype(np.uint8), labels, [f"class{k}" for k in range(classes)],
                        name="stripes")


@pytest.fixture(scope="module")
def data():
    train, val = split_validation(stripes(200, 0), 0.2, seed=0)   # 160 / 40: 5 steps an epoch
    return train, val, stripes(60, 1)


def config(**kw):
    options = dict(epochs=2, batch_size=32, augment=True, log_every=5, eval_batch_size=64)
    options.update(kw)
    return make_config(**options)


def trainer(data, out, cfg=None, **kw):
    return Trainer(cfg or config(), out, datasets=data, progress=False, log=None, **kw)


def same_state(a, b):
    """Weights, optimizer state and dropout counters of two trainers are identical."""
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert list(wa) == list(wb)
    for name in wa:
        assert np.array_equal(wa[name], wb[name]), name
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["steps"] == sb["steps"] and sa["hyper"] == sb["hyper"]
    for key in sa["state"]:
        assert np.array_equal(sa["state"][key], sb["state"][key]), key
    assert a.model.get_extra_state() == b.model.get_extra_state()


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """The uninterrupted reference run (two epochs, default test config)."""
    t = trainer(data, tmp_path_factory.mktemp("full"))
    t.fit()
    return t


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in ("time", "images_per_s")} for h in history]


# ----------------------------------------------------------------------------- learning

def test_tiny_run_learns_and_writes_everything(data, tmp_path):
    t = trainer(data, tmp_path, config(epochs=3, augment=False))
    history = t.fit()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_top1_error"] < 0.25           # 4 classes: chance is 0.75
    test = t.evaluate()
    assert test["accuracy"] > 0.75 and test["count"] == 60
    for name in ("last.npz", "best.npz", "history.json", "history.csv", "history.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 3 and float(rows[2]["train_loss"]) == history[2]["train_loss"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_top1_error",
                            "val_top5_error", "lr", "time", "images_per_s"}
    assert json.loads((tmp_path / "history.json").read_text()) == history
    ck = checkpoint.load(tmp_path / "last.npz")
    assert ck["epoch"] == 3 and ck["step"] == 0 and ck["global_step"] == 3 * t.steps_per_epoch
    assert ck["classes"] == data[0].classes and ck["pipeline"]["input_shape"] == [1, 32, 32]


def test_best_checkpoint_holds_the_best_validation_epoch(full_run):
    history = full_run.history
    best = min(range(2), key=lambda i: (history[i]["val_top1_error"], i))
    ck = checkpoint.load(full_run.path("best.npz"))
    assert ck["epoch"] == best + 1
    assert ck["best_error"] == history[best]["val_top1_error"]


# ----------------------------------------------------------------------------- resuming

def test_resume_at_an_epoch_boundary_is_exact(data, full_run, tmp_path):
    full = full_run
    first = trainer(data, tmp_path / "cut", config(epochs=1))
    first.fit()
    resumed = Trainer.resume(tmp_path / "cut", overrides={"epochs": 2}, datasets=data,
                             progress=False, log=None)
    assert (resumed.state.epoch, resumed.state.step) == (1, 0)
    resumed.fit()
    same_state(full, resumed)
    assert without_timing(resumed.history) == without_timing(full.history)


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_ctrl_c_mid_epoch_saves_and_resume_is_exact(data, full_run, tmp_path, how):
    full = full_run
    steps = full.steps_per_epoch

    def press_ctrl_c(t):
        if t.state.global_step == steps + 3:          # the 4th step of the second epoch
            if how == "signal":
                signal.raise_signal(signal.SIGINT)   # what a terminal's Ctrl-C sends
            else:
                raise KeyboardInterrupt          # e.g. no signal handler (not the main thread)

    cut = trainer(data, tmp_path / "cut", on_step=press_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        cut.fit()
    message = str(info.value)
    assert "epoch 2, step 3/" in message and "--resume" in message and "\n" not in message
    assert info.value.checkpoint == str(tmp_path / "cut" / "last.npz")
    ck = checkpoint.load(info.value.checkpoint)
    assert (ck["epoch"], ck["step"], ck["global_step"]) == (1, 3, steps + 3)
    assert signal.getsignal(signal.SIGINT) == handler        # the caller's handler is back

    resumed = Trainer.resume(tmp_path / "cut", datasets=data, progress=False, log=None)
    resumed.fit()
    same_state(full, resumed)
    assert without_timing(resumed.history) == without_timing(full.history)


def test_ctrl_c_inside_a_weight_update_keeps_the_last_checkpoint(data, tmp_path):
    t = trainer(data, tmp_path, config(epochs=1))
    t.fit()
    before = (tmp_path / "last.npz").read_bytes()
    resumed = Trainer.resume(tmp_path, overrides={"epochs": 2}, datasets=data, progress=False,
                             log=None)
    real_update = resumed.optimizer.update
    calls = []

    def update_then_interrupt(p, g, state):      # Ctrl-C lands once the weights have moved
        real_update(p, g, state)
        calls.append(p.size)
        if len(calls) == 1:                      # (the one update of the flat buffers)
            raise KeyboardInterrupt

    resumed.optimizer.update = update_then_interrupt
    with pytest.raises(Interrupted, match="during an update.*last checkpoint .* is kept"):
        resumed.fit()
    assert (tmp_path / "last.npz").read_bytes() == before


# ----------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("layer_checks", [True, False])
def test_nan_stops_training_names_the_step_and_keeps_the_checkpoint(data, tmp_path, layer_checks):
    t = trainer(data, tmp_path, config(epochs=1))
    t.fit()
    before = (tmp_path / "last.npz").read_bytes()
    resumed = Trainer.resume(tmp_path, overrides={"epochs": 2}, datasets=data, progress=False,
                             log=None)
    # layer_checks=False is the GPU's way: no per-layer checks, the running loss is read
    # every few steps and must still name the first bad step.
    resumed.model.set_check_finite(layer_checks)
    resumed.loss_fn.set_check_finite(layer_checks)
    resumed.read_every = 4
    bad_step = resumed.steps_per_epoch + 2        # the loss of step number bad_step is NaN

    def poison(tr):
        if tr.state.global_step == bad_step - 1:
            tr.model["fc8"].params["weight"][...] = np.nan

    resumed.on_step = poison
    with pytest.raises(NonFiniteError) as info:
        resumed.fit()
    message = str(info.value)
    assert f"diverged at step {bad_step} " in message and "\n" not in message
    assert "lower learning rate" in message and "--lr 0.0001" in message
    assert "last checkpoint" in message and "(after epoch 1)" in message
    assert (tmp_path / "last.npz").read_bytes() == before
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


class FakeGPUError(Exception):
    """Stands in for CuPy's and the CUDA libraries' errors, which need a GPU to happen."""


# CuPy's pool, and cuBLAS failing to allocate its workspace (which CuPy does not wrap)
GPU_OUT_OF_MEMORY = ["Out of memory allocating 1,073,741,824 bytes", "CUBLAS_STATUS_ALLOC_FAILED"]


@pytest.mark.parametrize("what", GPU_OUT_OF_MEMORY)
def test_running_out_of_gpu_memory_suggests_a_smaller_batch(data, tmp_path, monkeypatch, what):
    monkeypatch.setattr(backend, "gpu_error_types", lambda: (FakeGPUError,))
    t = trainer(data, tmp_path, config(epochs=1))
    t.fit()
    before = (tmp_path / "last.npz").read_bytes()
    resumed = Trainer.resume(tmp_path, overrides={"epochs": 2}, datasets=data, progress=False,
                             log=None)

    def allocate_too_much(tr):
        if tr.state.step == 2:
            raise FakeGPUError(what)

    resumed.on_step = allocate_too_much
    with pytest.raises(TinyAlexNetError) as info:
        resumed.fit()
    message = str(info.value)
    assert "\n" not in message
    assert "out of GPU memory at epoch 2, step 3 with batch size 32" in message
    assert "try a smaller --batch-size, e.g. 16" in message
    assert (tmp_path / "last.npz").read_bytes() == before


def test_other_gpu_errors_are_not_called_out_of_memory(data, tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "gpu_error_types", lambda: (FakeGPUError,))
    t = trainer(data, tmp_path, config(epochs=1))

    def fail(tr):
        raise FakeGPUError("cudaErrorIllegalAddress: an illegal memory access was encountered")

    t.on_step = fail
    with pytest.raises(FakeGPUError, match="cudaErrorIllegalAddress"):
        t.fit()


def test_a_learning_rate_far_too_high_diverges_with_advice(data, tmp_path):
    t = trainer(data, tmp_path, config(epochs=1, optimizer="sgd", lr=1e6, momentum=0.9))
    with pytest.raises(NonFiniteError, match=r"diverged at step \d+ .*--lr 100000"):
        t.fit()
    assert not (tmp_path / "last.npz").exists()


# ----------------------------------------------------------------------------- safety

def test_a_fresh_run_never_overwrites_an_existing_one(data, tmp_path):
    trainer(data, tmp_path, config(epochs=1)).fit()
    before = (tmp_path / "last.npz").read_bytes()
    with pytest.raises(TinyAlexNetError, match="already holds a run.*--resume"):
        trainer(data, tmp_path, config(epochs=1))
    assert (tmp_path / "last.npz").read_bytes() == before


def test_resuming_a_checkpoint_of_another_model_is_refused(data, tmp_path):
    trainer(data, tmp_path, config(epochs=1)).fit()
    state = RunState.from_checkpoint(checkpoint.load(tmp_path / "last.npz"))
    with pytest.raises(TinyAlexNetError, match="'alexnet_small'.*not model 'alexnet32'"):
        trainer(data, tmp_path / "other", config(epochs=1, model="alexnet32"), state=state)
    assert not (tmp_path / "other").exists()          # the folder it claimed is gone again


# ----------------------------------------------------------------------------- pieces

def test_recipes():
    paper = make_config("paper")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay, paper.batch_size) == \
        ("sgd", 0.01, 0.9, 0.0005, 128)
    assert (paper.schedule, paper.max_reductions, paper.init, paper.augment, paper.lighting) == \
        ("plateau", 3, "paper", True, True)
    adam15 = make_config("adam15")
    assert (adam15.optimizer, adam15.lr, adam15.batch_size, adam15.epochs, adam15.augment,
            adam15.schedule) == ("adam", 0.001, 64, 15, False, "none")
    assert make_config("paper", lr=0.02, epochs=None).lr == 0.02      # options override
    assert make_config().model == "alexnet_small"
    assert make_config().dataset == "fashion-mnist-subset"
    assert set(RECIPES) == {"default", "paper", "adam15"}
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(batch_size=0), dict(model="vgg"),
                dict(val_fraction=1.0), dict(backend="tpu")):
        with pytest.raises(TinyAlexNetError, match="invalid --"):
            make_config(**bad)


def test_plateau_schedule_divides_the_learning_rate_by_ten(data, tmp_path):
    # With lr far too small to learn, the validation error cannot improve after
    # the first epoch: patience 0 divides after every later epoch, at most twice here.
    cfg = config(epochs=4, optimizer="sgd", lr=1e-9, schedule="plateau", patience=0,
                 max_reductions=2, limit=None)
    history = trainer(data, tmp_path, cfg).fit()
    assert [h["lr"] for h in history] == pytest.approx([1e-9, 1e-9, 1e-10, 1e-11])


def test_topk_correct_counts_ties_against_the_prediction():
    scores = np.array([[0.1, 0.9, 0.0],      # true 1: top-1
                       [0.5, 0.2, 0.3],      # true 2: second
                       [0.4, 0.4, 0.4]])     # true 0: a three-way tie is not a prediction
    c1, c2 = topk_correct(scores, np.array([1, 2, 0]), ks=(1, 2))
    assert (int(c1), int(c2)) == (1, 2)


def test_topk_correct_never_counts_nan_as_right(xp):
    nan = np.nan
    scores = xp.asarray([[nan, nan, nan],    # a broken network: right about nothing
                         [0.9, nan, 0.1],    # true 0 beats 0.1, but a NaN is not below it
                         [0.2, 0.7, 0.1]])   # true 1: top-1, unaffected
    c1, c2 = topk_correct(scores, xp.asarray([0, 0, 1]), ks=(1, 2))
    assert (int(c1), int(c2)) == (1, 2)


def test_running_meter_remembers_the_first_non_finite_step():
    m = RunningMeter(np)
    logits = np.array([[2.0, 1.0], [0.0, 3.0]], np.float32)
    labels = np.array([0, 0])
    for step, loss in enumerate([0.5, 0.25, np.nan, 0.1, np.inf]):
        m.add(np.float32(loss), logits, labels, step)
    values = m.read()
    assert values["first_bad"] == 2 and values["count"] == 10 and values["correct1"] == 5
    long_run = RunningMeter(np)
    for step in (0, 600, 123_457, 10_000_001):    # far into a long run, all finite
        long_run.add(np.float32(0.5), logits, labels, step)
    assert long_run.read()["first_bad"] is None


def test_evaluate_agrees_with_a_direct_computation(data):
    _, _, test = data
    model = get_model("alexnet_small", num_classes=4, in_channels=1, seed=3)
    pipe = Pipeline.for_dataset(data[0], model.input_shape)
    result = evaluate(model, test, pipe, batch_size=23)          # 60 = 2 * 23 + 14
    images, labels = test.get_batch(np.arange(len(test)))
    logp = log_softmax(model.eval().forward(pipe(images, train=False)).astype(np.float64))
    order = np.argsort(-logp, axis=1)
    assert result["loss"] == pytest.approx(-logp[np.arange(60), labels].mean(), rel=1e-5)
    assert result["top1_error"] == pytest.approx(np.mean(order[:, 0] != labels))
    assert result["top5_error"] == 0.0                           # 4 classes: always in the top 5
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (labels, order[:, 0]), 1)
    assert np.array_equal(result["confusion"], expected)


def test_ten_crop_evaluation_averages_softmax_over_the_ten_views(data):
    _, _, test = data
    model = get_model("alexnet_small", num_classes=4, in_channels=1, seed=3).eval()
    pipe = Pipeline.for_dataset(data[0], model.input_shape, augment=True)
    result = evaluate(model, test, pipe, batch_size=32, ten_crop=True)
    images, labels = test.get_batch(np.arange(len(test)))
    views = pipe.ten_crop(images)
    probs = np.mean([np.exp(log_softmax(model.forward(v).astype(np.float64))) for v in views],
                    axis=0)
    assert result["top1_error"] == pytest.approx(np.mean(probs.argmax(1) != labels))
    assert result["loss"] == pytest.approx(-np.log(probs[np.arange(60), labels]).mean(), rel=1e-4)


# ----------------------------------------------------------------------------- names

def as_an_earlier_version_wrote_it(path):
    """Rewrite the checkpoint at ``path`` with the names an earlier version stored: the
    model "small", the recipe "seed003".  Every array stays as it was."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    assert (meta["model"], meta["config"]["recipe"]) == ("alexnet_small", "adam15")
    meta["model"] = "small"
    meta["config"].update(model="small", recipe="seed003")
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_a_checkpoint_with_the_earlier_names_resumes_as_the_same_run(data, tmp_path):
    full = trainer(data, tmp_path / "full", config(recipe="adam15"))
    full.fit()
    first = trainer(data, tmp_path / "old", config(recipe="adam15", epochs=1))
    first.fit()
    as_an_earlier_version_wrote_it(tmp_path / "old" / "last.npz")
    ck = checkpoint.load(tmp_path / "old" / "last.npz")
    model = checkpoint.build_model(ck)                    # what evaluate and predict do
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    first.model.eval()
    assert np.array_equal(model.forward(x), first.model.forward(x))
    resumed = Trainer.resume(tmp_path / "old", overrides={"epochs": 2}, datasets=data,
                             progress=False, log=None)
    assert (resumed.config.model, resumed.config.recipe) == ("alexnet_small", "adam15")
    resumed.fit()
    same_state(full, resumed)                   # the same run as one never stopped
    assert without_timing(resumed.history) == without_timing(full.history)
    with np.load(tmp_path / "old" / "last.npz", allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
    assert (meta["model"], meta["config"]["model"], meta["config"]["recipe"]) == \
        ("alexnet_small", "alexnet_small", "adam15")    # written with today's names


def test_the_command_line_takes_the_earlier_names_and_shows_one(capsys):
    from tinyalexnet.cli import build_parser
    args = build_parser().parse_args(["train", "--model", "small", "--recipe", "seed003"])
    assert (args.model, args.recipe) == ("alexnet_small", "adam15")
    assert build_parser().parse_args(["info", "small"]).model == "alexnet_small"
    assert make_config("seed003", model="small") == make_config("adam15", model="alexnet_small")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "seed003" not in help_text and "{alexnet_small,alexnet32,alexnet}" in help_text
    assert "adam15 (Adam 1e-3, batch 64, 15 epochs, no augmentation" in help_text


def test_every_attribute_is_set_in_init(data, tmp_path):
    """A reader finds all of a Trainer's attributes (and its stops') in __init__: training,
    a Ctrl-C and a resume add none."""
    def press_ctrl_c(t):
        if t.state.global_step == t.steps_per_epoch + 2:
            raise KeyboardInterrupt

    t = trainer(data, tmp_path, on_step=press_ctrl_c)
    names, stop_names = set(vars(t)), set(vars(t.stops))
    with pytest.raises(Interrupted):
        t.fit()
    assert set(vars(t)) == names and set(vars(t.stops)) == stop_names
    resumed = Trainer.resume(tmp_path, datasets=data, progress=False, log=None)
    resumed.fit()
    assert set(vars(resumed)) == names and set(vars(resumed.stops)) == stop_names


def test_scores_come_from_the_loss_layers_own_log_softmax():
    from tinyalexnet import metrics
    from tinyalexnet.layers import loss
    assert metrics.log_softmax is loss.log_softmax and log_softmax is loss.log_softmax


# ----------------------------------------------------------------------------- no test-set leak

def test_input_statistics_come_from_the_training_images_alone(tmp_path):
    """The pipeline's mean and std are counted on the training split only: bright training,
    mid-grey validation and dark test images give three different answers."""
    def images(n, low, high, seed):
        rng = np.random.default_rng(seed)
        return ArrayDataset(rng.integers(low, high, (n, 1, 28, 28)).astype(np.uint8),
                            rng.integers(0, 4, n), [f"class{k}" for k in range(4)])

    train, val, test = images(40, 150, 256, 0), images(20, 60, 180, 1), images(20, 0, 90, 2)
    t = trainer((train, val, test), tmp_path, config(epochs=1))
    try:
        pixels = train.images.astype(np.float64) / 255          # the count here
        assert t.pipeline.mean == pytest.approx([pixels.mean()], rel=1e-9)
        assert t.pipeline.std == pytest.approx([pixels.std()], rel=1e-9)
        saved = checkpoint.read_meta(t.save("last.npz"))["pipeline"]   # what evaluate and resume use
        assert saved["mean"] == pytest.approx([pixels.mean()], rel=1e-9)
        assert saved["std"] == pytest.approx([pixels.std()], rel=1e-9)
    finally:
        t.close()
