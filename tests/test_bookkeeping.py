"""The run's bookkeeping, each number checked against a count made here.

The resume-exactness tests compare a run with itself (stopped and resumed
against never stopped), so a mistake made the same way both times cannot show
there: a batch order or augmentation that ignores the epoch, a scheduler
stepped on the wrong number.  Each test below counts what the run must have
done by other means (the indices a data set was asked for, the crops a pipeline
produced, the top-1 error counted with argmax, the dropout masks drawn) and
compares.  Every test here failed on a bug planted on purpose in the code it
guards (listed in each docstring).
"""
import json

import numpy as np
import pytest

from tinyalexnet import checkpoint
from tinyalexnet.backend import as_numpy
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.errors import CheckpointError
from tinyalexnet.layers import ReLU
from tinyalexnet.models import get_model
from tinyalexnet.config import make_config
from tinyalexnet.datasets.split import split_validation
from tinyalexnet.metrics import RunningMeter, evaluate, topk_correct
from tinyalexnet.train import Trainer
from tinyalexnet.transforms import Pipeline


def stripes(n, seed, classes=4, size=28):
    """Grey images whose class is the row of a bright stripe (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, 1, size, size))
    rows = 3 + (20 // classes) * labels
    for k in range(2):
        images[np.arange(n), 0, rows + k, 4:24] += 150
    return ArrayDataset(images.astype(np.uint8), labels, [f"c{k}" for k in range(classes)],
                        name="stripes")


def data(n_train=160, classes=4):
    return stripes(n_train, 0, classes), stripes(40, 1, classes), stripes(30, 2, classes)


def config(**kw):
    options = dict(epochs=2, batch_size=32, augment=False, log_every=5, eval_batch_size=64)
    options.update(kw)
    return make_config(**options)


# lr so small that no float32 weight moves (1e-9 x gradient is far below half an ulp
# of weights ~0.1): every epoch's validation error is the same, a tie.
FROZEN = dict(optimizer="sgd", lr=1e-9, momentum=0.0)


def trainer(datasets, out, cfg, **kw):
    return Trainer(cfg, out, datasets=datasets, progress=False, log=kw.pop("log", None), **kw)


def top1_error_by_argmax(t, dataset):
    """The validation top-1 error counted here: argmax of the model's scores vs the label."""
    images, labels = dataset.get_batch(np.arange(len(dataset)))
    was_training = t.model.training
    logits = t.model.eval().forward(t.pipeline(images, train=False))
    t.model.train(was_training)
    return float(np.mean(np.argmax(logits, axis=1) != labels))


class Recording:
    """A data set that remembers the indices of every batch it is asked for."""

    def __init__(self, dataset):
        self.dataset, self.asked = dataset, []
        self.classes, self.channels = dataset.classes, dataset.channels

    def __len__(self):
        return len(self.dataset)

    def get_batch(self, indices):
        self.asked.append(np.array(indices))
        return self.dataset.get_batch(indices)


# ----------------------------------------------------------------------------- data order

def test_every_epoch_shows_every_image_once_in_a_new_order(tmp_path):
    """Planted: batch order that ignores the epoch (``batch_order`` seeded by the seed only)."""
    train, val, test = data(n_train=100)
    recording = Recording(train)
    t = trainer((recording, val, test), tmp_path, config(epochs=3))
    recording.asked.clear()                       # the pipeline's statistics read it too
    t.fit()
    steps = t.steps_per_epoch                     # 100 images, batch 32: 4 steps
    orders = [np.concatenate(recording.asked[e * steps:(e + 1) * steps]) for e in range(3)]
    assert len(recording.asked) == 3 * steps
    for order in orders:
        assert sorted(order.tolist()) == list(range(100))      # each image once an epoch
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(100))       # shuffled at all


class RecordingPipeline(Pipeline):
    """The real pipeline, remembering every training batch it made."""

    def __call__(self, images, train, rng=None, xp=None):
        out = super().__call__(images, train, rng, xp)
        if train:
            self.__dict__.setdefault("made", []).append(np.array(out))
        return out


def test_augmentation_draws_new_crops_every_epoch(tmp_path):
    """Planted: augmentation random numbers that ignore the epoch (Generator seeded by
    (seed, step) only)."""
    one = stripes(1, 0).images                                 # one image, 96 times: the
    same = ArrayDataset(np.repeat(one, 96, axis=0),            # batch order cannot matter,
                        np.arange(96) % 4, [f"c{k}" for k in range(4)])   # only the crops
    _, val, test = data()
    pipe = RecordingPipeline.for_dataset(same, (1, 32, 32), augment=True)
    t = trainer((same, val, test), tmp_path, config(epochs=2, augment=True), pipeline=pipe)
    t.fit()
    made = pipe.made
    assert len(made) == 2 * 3                                 # 96 / 32: three steps an epoch
    for step in range(3):
        assert not np.array_equal(made[step], made[3 + step]), step      # epoch 1 vs 2
    assert not np.array_equal(made[0], made[1])                          # step 0 vs 1
    # 32 copies of one image, each cut and flipped at random: many different views
    assert len({v.tobytes() for v in made[0]}) > 8


# ----------------------------------------------------------------------------- schedule and best

def test_plateau_schedule_is_stepped_on_the_top1_error(tmp_path):
    """Planted: the plateau scheduler stepped on the validation loss."""
    datasets = data()
    counted = []
    t = trainer(datasets, tmp_path, config(epochs=3, optimizer="sgd", lr=0.01,
                                           schedule="plateau"),
                on_epoch=lambda tr, record: counted.append(top1_error_by_argmax(tr, datasets[1])))
    received = []
    real_step = t.scheduler.step
    t.scheduler.step = lambda metric: (received.append(metric), real_step(metric))[1]
    t.fit()
    assert received == pytest.approx(counted, abs=1e-12)
    losses = [h["val_loss"] for h in t.history]
    assert all(abs(r - l) > 1e-3 for r, l in zip(received, losses))   # the two differ here


def test_a_tied_validation_error_is_not_a_new_best(tmp_path):
    """Planted: ``val_error <= best_error`` (a tie counted as a new best)."""
    datasets = data()
    counted, lines = [], []
    t = trainer(datasets, tmp_path, config(epochs=3, **FROZEN), log=lines.append,
                on_epoch=lambda tr, record: counted.append(top1_error_by_argmax(tr, datasets[1])))
    t.fit()
    assert counted[0] == counted[1] == counted[2]              # the premise: three ties
    assert checkpoint.load(tmp_path / "best.npz")["epoch"] == 1
    assert [("*best" in line) for line in lines if line.startswith("epoch ")] == \
        [True, False, False]


@pytest.mark.parametrize("schedule, options", [("plateau", dict(patience=1)),
                                               ("step", dict(step_size=3))])
def test_resume_keeps_the_schedule_state(tmp_path, schedule, options):
    """Planted: resume that forgets the scheduler's state (``Trainer._restore`` skipping it).

    Frozen weights tie every epoch's error.  Plateau, patience 1: epoch 1 sets the best,
    epochs 2 and 3 do not improve, so the lr is divided after epoch 3.  Step, every 3
    epochs: divided after epoch 3 too.  A run stopped after epoch 2 must do the same."""
    datasets = data()
    cfg = dict(FROZEN, schedule=schedule, **options)
    lr = cfg["lr"]
    expected = pytest.approx([lr, lr, lr, lr / 10], rel=1e-12)
    whole = trainer(datasets, tmp_path / "whole", config(epochs=4, **cfg))
    whole.fit()
    assert [h["lr"] for h in whole.history] == expected
    trainer(datasets, tmp_path / "cut", config(epochs=2, **cfg)).fit()
    resumed = Trainer.resume(tmp_path / "cut", overrides={"epochs": 4}, datasets=datasets,
                             progress=False, log=None)
    resumed.fit()
    assert [h["lr"] for h in resumed.history] == expected


def test_resume_keeps_the_best_error(tmp_path):
    """Planted: resume that forgets ``best_error`` (the next epoch always "best")."""
    datasets = data()
    counted = []
    first = trainer(datasets, tmp_path, config(epochs=2, **FROZEN),
                    on_epoch=lambda tr, rec: counted.append(top1_error_by_argmax(tr, datasets[1])))
    first.fit()
    best_before = (tmp_path / "best.npz").read_bytes()
    resumed = Trainer.resume(tmp_path, overrides={"epochs": 3}, datasets=datasets,
                             progress=False, log=None)
    assert resumed.state.best_error == pytest.approx(min(counted), abs=1e-12)
    resumed.fit()
    assert resumed.history[2]["val_top1_error"] == pytest.approx(min(counted))   # a tie
    assert (tmp_path / "best.npz").read_bytes() == best_before
    assert checkpoint.load(tmp_path / "best.npz")["epoch"] == 1


# ----------------------------------------------------------------------------- interrupted steps

def test_ctrl_c_inside_backward_gives_back_the_dropout_masks(tmp_path):
    """Planted: an interrupt inside a step that keeps the dropout masks its forward drew.

    Each training step draws one mask in each dropout layer (validation draws none), so
    after k whole steps every layer has drawn exactly k masks."""
    datasets = data()
    whole = trainer(datasets, tmp_path / "whole", config(epochs=2))
    whole.fit()
    cut = trainer(datasets, tmp_path / "cut", config(epochs=2))
    steps = cut.steps_per_epoch
    real_backward = cut.model.backward

    def backward_then_ctrl_c(dout):                # Ctrl-C lands during backward
        if cut.state.global_step == steps + 2:
            raise KeyboardInterrupt
        return real_backward(dout)

    cut.model.backward = backward_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    ck = checkpoint.load(tmp_path / "cut" / "last.npz")
    assert ck["global_step"] == steps + 2
    dropout = {name: s["calls"] for name, s in ck["extra_state"].items()}
    assert dropout == {"drop6": steps + 2, "drop7": steps + 2}
    resumed = Trainer.resume(tmp_path / "cut", datasets=datasets, progress=False, log=None)
    resumed.fit()
    for name, w in whole.model.state_dict().items():
        assert np.array_equal(resumed.model.state_dict()[name], w), name


# ----------------------------------------------------------------------------- running numbers

def test_training_loss_and_accuracy_are_means_over_images(tmp_path):
    """Planted: the running training loss not weighted by batch size (a mean of batch means).

    97 images in batches of 32: the last batch holds one image, which an unweighted mean
    of the four batch losses would count 32 times too much."""
    train, val, test = data(n_train=97)
    t = trainer((train, val, test), tmp_path, config(epochs=1))
    seen = []
    real_forward = t.loss_fn.forward

    def forward(logits, labels):
        loss = real_forward(logits, labels)
        seen.append((float(loss), len(labels), int((np.argmax(logits, 1) == labels).sum())))
        return loss

    t.loss_fn.forward = forward
    t.fit()
    losses, sizes, correct = map(np.array, zip(*seen))
    assert sizes.tolist() == [32, 32, 32, 1]
    weighted = float((losses * sizes).sum() / sizes.sum())
    assert abs(weighted - losses.mean()) > 1e-4             # the two means really differ here
    assert t.history[0]["train_loss"] == pytest.approx(weighted, rel=1e-6)
    assert t.history[0]["train_acc"] == pytest.approx(correct.sum() / 97, abs=1e-12)


class NoSubset:
    """A data set without a ``subset`` method (as an image folder): split_validation
    must then take views of it."""

    def __init__(self, dataset):
        self.dataset, self.classes, self.channels = dataset, dataset.classes, dataset.channels

    def __len__(self):
        return len(self.dataset)

    def get_batch(self, indices):
        return self.dataset.get_batch(indices)


@pytest.mark.parametrize("wrap", [lambda d: d, NoSubset], ids=["arrays", "views"])
@pytest.mark.parametrize("n, fraction", [(101, 0.1), (50, 0.2), (7, 0.5)])
def test_validation_split_is_disjoint_and_complete(wrap, n, fraction):
    """Planted: a validation split that leaks one image into training."""
    ids = np.arange(n)
    images = np.zeros((n, 1, 4, 4), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids % 256, ids // 256     # each image its number
    ds = wrap(ArrayDataset(images, ids % 3, ["a", "b", "c"]))
    train, val = split_validation(ds, fraction, seed=5)

    def numbers(part):
        got, _ = part.get_batch(np.arange(len(part)))
        return got[:, 0, 0, 0].astype(int) + 256 * got[:, 0, 0, 1].astype(int)

    t, v = numbers(train), numbers(val)
    assert len(v) == round(n * fraction) and len(t) == n - len(v)
    assert not set(t) & set(v)
    assert sorted(set(t) | set(v)) == list(range(n)) and len(set(t)) == len(t)


# ----------------------------------------------------------------------------- top-5

def rank_of_label(scores, labels):
    """1 + how many classes score strictly higher than the true one (argsort, no ties)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return 1 + np.argmax(order == labels[:, None], axis=1)


def test_topk_correct_counts_the_rank_exactly():
    """Planted: top-5 that is really top-6 (also the default ``ks``)."""
    rng = np.random.default_rng(0)
    scores = rng.permutation(100).reshape(10, 10).astype(np.float32)   # no ties
    ranks = np.arange(1, 11)                       # row r: the label is the r-th best class
    labels = np.argsort(-scores, axis=1)[np.arange(10), ranks - 1]
    assert rank_of_label(scores, labels).tolist() == ranks.tolist()
    counts = topk_correct(scores, labels, ks=tuple(range(1, 11)))
    assert [int(c) for c in counts] == list(range(1, 11))
    assert [int(c) for c in topk_correct(scores, labels)] == [1, 5]


def test_top5_error_of_evaluate_the_trainer_and_the_meter():
    """Planted: top-5 that is really top-6, in evaluate and in the running meter."""
    test = stripes(120, 3, classes=10, size=28)
    model = get_model("small", num_classes=10, in_channels=1, seed=1)
    pipe = Pipeline.for_dataset(test, model.input_shape)
    images, labels = test.get_batch(np.arange(len(test)))
    scores = model.eval().forward(pipe(images, train=False))
    ranks = rank_of_label(scores, labels)
    assert (ranks == 6).sum() > 0                  # the premise: top-5 and top-6 differ here
    result = evaluate(model, test, pipe, batch_size=50)
    assert result["top5_error"] == pytest.approx(np.mean(ranks > 5), abs=1e-12)
    assert result["top1_error"] == pytest.approx(np.mean(ranks > 1), abs=1e-12)
    meter = RunningMeter(np)
    meter.add(np.float32(1.0), scores, labels, step=0)
    assert meter.read()["correct5"] == (ranks <= 5).sum()


def test_the_trainers_validation_top5_error(tmp_path):
    """Planted: top-5 that is really top-6, as the trainer records it."""
    ten = (stripes(100, 0, classes=10), stripes(80, 1, classes=10), stripes(30, 2, classes=10))
    counted = []

    def count(tr, record):
        images, labels = ten[1].get_batch(np.arange(80))
        scores = tr.model.eval().forward(tr.pipeline(images, train=False))
        tr.model.train()
        counted.append(rank_of_label(scores, labels))

    t = trainer(ten, tmp_path, config(epochs=1, **FROZEN), on_epoch=count)
    t.fit()
    ranks = counted[0]
    assert (ranks == 6).sum() > 0
    assert t.history[0]["val_top5_error"] == pytest.approx(np.mean(ranks > 5), abs=1e-12)


# ----------------------------------------------------------------------------- checkpoint format

def test_a_checkpoint_from_a_newer_format_is_refused(tmp_path):
    """Planted: the checkpoint format-version check removed."""
    model = get_model("small", num_classes=4, in_channels=1)
    checkpoint.save(tmp_path / "ok.npz", model, checkpoint.model_meta(model, "small"))
    with np.load(tmp_path / "ok.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["version"] == checkpoint.VERSION
    checkpoint.load(tmp_path / "ok.npz")                    # the untouched file loads
    meta["version"] = checkpoint.VERSION + 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "newer.npz")
    message = str(err.value)
    assert "version" in message and str(checkpoint.VERSION + 1) in message and "\n" not in message


# ----------------------------------------------------------------------------- ReLU at 0

def test_relu_gradient_at_exactly_zero_is_zero(xp):
    """Planted: ReLU's mask ``x >= 0`` (the gradient at 0 taken as 1).

    max(0, x) has no derivative at 0; the convention (PyTorch's too) is 0, and a
    network whose ReLU inputs are exactly 0 (a dead unit, zero padding) must not
    pass gradient through them."""
    x = xp.asarray(np.array([[-2.0, -0.0, 0.0, 1e-30, 3.0], [0.0, 0.5, -1e-30, 0.0, 0.0]]))
    dout = xp.asarray(np.arange(1.0, 11.0).reshape(2, 5))
    layer = ReLU()
    y = layer.forward(x)
    dx = as_numpy(layer.backward(dout))
    expected = np.array([[0, 0, 0, 4, 5], [0, 7, 0, 0, 0]], dtype=np.float64)
    assert np.array_equal(dx, expected)
    assert float(y.min()) == 0.0
