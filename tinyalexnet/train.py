"""Training: the loop that turns a randomly initialised AlexNet into a classifier.

One step of stochastic gradient descent, the whole idea::

    images, labels = train_set.get_batch(indices)        # uint8, on the host
    x = pipeline(images, train=True, rng=rng, xp=xp)      # float32, on the device
    loss = loss_fn.forward(model.forward(x), labels)      # mean cross-entropy
    model.backward(loss_fn.backward())                    # fills every layer's grads
    optimizer.step()                                      # w <- w - lr * (something like) dL/dw

``Trainer`` wraps that step with what a real run needs: an epoch loop with a
progress bar, validation after each epoch (top-1 and top-5 error), a
learning-rate schedule, checkpoints to resume from, the history as CSV/JSON/PNG,
and safe stops (Ctrl-C saves; a diverging loss stops with advice; running out
of GPU memory says which knob to turn).

Keeping the GPU busy.  A CuPy call only *queues* work on the GPU; the host
runs ahead until it needs a number back (``float(loss)``, ``.item()``,
``as_numpy``), and then it must wait for everything queued so far.  So the loop
keeps its running sums (loss, correct top-1/top-5 counts) *on the device* and
reads them only every ``log_every`` steps and at the end of an epoch; labels go
to the loss as host NumPy arrays (checked there for free); and the per-layer
NaN checks, each a hidden read-back, are switched off on the GPU: a diverged
run shows up instead as a non-finite running loss when it is read.

Exact resumption.  All randomness is a function of the seed and counters:
batch order of (seed, epoch), augmentation of (seed, epoch, step), dropout
masks of (seed, mask counter).  A checkpoint stores the counters, so a run
stopped at any step and resumed on the CPU ends with the same weights, bit for
bit, as one that was never stopped.
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time

from tqdm import tqdm

from . import backend, checkpoint, plots
from .backend import numpy as np
from .datasets import iterate_batches, load_dataset
from .datasets.prefetch import prefetch
from .errors import NonFiniteError, TinyAlexNetError
from .layers import SoftmaxCrossEntropy
from .models import MODELS, get_model
from .optim import SGD, Adam, ReduceLROnPlateau, StepLR
from .transforms import Pipeline, paper_canvas

# --------------------------------------------------------------------- recipes

RECIPES = {
    # The no-argument run: the small model on the embedded Fashion-MNIST subset,
    # a few minutes on two CPU cores.  Adam needs no learning-rate tuning.
    "default": dict(model="small", optimizer="adam", lr=1e-3, batch_size=64, epochs=6,
                    schedule="none", weight_decay=0.0, augment=False, lighting=False),
    # The paper, section 5: SGD with momentum 0.9 and weight decay 0.0005, batch 128,
    # lr 0.01 divided by 10 when the validation error stops improving (three times),
    # weights from N(0, 0.01^2), random crops with reflections and PCA lighting.
    "paper": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0005, batch_size=128,
                  epochs=90, schedule="plateau", patience=1, max_reductions=3, init="paper",
                  augment=True, lighting=True),
    # Seed 003's CIFAR-10 runs: Adam lr 0.001, batch 64, 15 epochs, no augmentation.
    "seed003": dict(optimizer="adam", lr=1e-3, batch_size=64, epochs=15, schedule="none",
                    weight_decay=0.0, augment=False, lighting=False),
}

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "step", "plateau")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint."""
    recipe: str = "default"
    dataset: str = "fashion-mnist-subset"
    data_dir: str = None
    download: bool = False
    model: str = "small"
    init: str = None             # "paper" or "he"; None: the model's own default
    backend: str = "numpy"
    epochs: int = 6
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9        # SGD only
    weight_decay: float = 0.0
    schedule: str = "none"       # "none", "step" (/10 every step_size epochs), "plateau"
    step_size: int = 30
    patience: int = 1            # plateau: epochs without improvement before dividing
    max_reductions: int = 3      # plateau: the paper divided three times
    augment: bool = False        # random crops + horizontal reflections
    lighting: bool = False       # PCA colour noise (colour data sets only)
    val_fraction: float = 0.1    # held out of the training set; 0: validate on the test set
    limit: int = None            # use at most this many images of each split (quick runs)
    seed: int = 0
    log_every: int = 50          # steps between reads of the running numbers on a GPU
    eval_batch_size: int = 256


def make_config(recipe=None, **options):
    """A TrainConfig: the defaults, then ``recipe``'s settings, then ``options`` (None = unset)."""
    recipe = recipe or "default"
    if recipe not in RECIPES:
        raise TinyAlexNetError(f"unknown recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    values = dict(RECIPES[recipe], recipe=recipe)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in options.items():
        if key not in fields:
            raise TypeError(f"make_config: unknown option {key!r}")
        if value is not None:
            values[key] = value
    config = TrainConfig(**values)
    check_config(config)
    return config


def check_config(c):
    """Raise a one-line TinyAlexNetError for a value that cannot work."""
    def bad(option, expected, got):
        raise TinyAlexNetError(f"invalid --{option.replace('_', '-')} {got!r}: expected {expected}")
    if c.model not in MODELS:
        bad("model", f"one of {', '.join(MODELS)}", c.model)
    if c.backend not in backend.BACKENDS:
        bad("backend", f"one of {', '.join(backend.BACKENDS)}", c.backend)
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", f"one of {', '.join(OPTIMIZERS)}", c.optimizer)
    if c.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}", c.schedule)
    if c.init not in (None, "paper", "he"):
        bad("init", "'paper' or 'he'", c.init)
    for name in ("epochs", "batch_size", "step_size", "log_every", "eval_batch_size"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            bad(name, "a positive integer", getattr(c, name))
    if c.limit is not None and (not isinstance(c.limit, int) or c.limit < 2):
        bad("limit", "an integer of at least 2", c.limit)
    if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0):
        bad("lr", "a positive number", c.lr)
    if not 0 <= c.weight_decay < 1:
        bad("weight_decay", "a number in [0, 1)", c.weight_decay)
    if not 0 <= c.momentum < 1:
        bad("momentum", "a number in [0, 1)", c.momentum)
    if not 0 <= c.val_fraction < 1:
        bad("val_fraction", "a number in [0, 1)", c.val_fraction)


# --------------------------------------------------------------------- metrics

def log_softmax(logits):
    """log p[n, k] = z[n, k] - max_j z[n, j] - log sum_j exp(z[n, j] - max_j z[n, j])."""
    xp = backend.get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def topk_correct(scores, labels, ks=(1, 5)):
    """How many rows have their true class among the k highest scores, for each k.

    No sorting: the true class is in the top k exactly when fewer than k scores
    are at least as high as its own (itself included, so "rank <= k").  Ties
    count against the prediction, so a network that outputs the same score for
    every class is never "right"; so does NaN (every comparison with NaN is
    false, so "not below" counts it), so a broken network is never right either.
    Returns 0-d arrays on the scores' device.
    """
    xp = backend.get_array_module(scores)
    true = scores[xp.arange(scores.shape[0]), labels][:, None]
    rank = (~(scores < true)).sum(axis=1)        # 1 for a clear winner
    return tuple((rank <= k).sum() for k in ks)


class RunningMeter:
    """Sums of loss and correct counts, kept on the device; ``read()`` is the one sync.

    ``first_bad`` remembers the first step whose loss was not finite, so a GPU
    run that diverges can still name the step when the sums are read later.
    """

    NEVER = 2 ** 40      # "no bad step yet": float64 holds every integer up to 2^53 exactly

    def __init__(self, xp, loss_sum=0.0, correct1=0.0, correct5=0.0, count=0):
        self.xp = xp
        self.loss_sum = xp.asarray(loss_sum, dtype=xp.float64)
        self.correct1 = xp.asarray(correct1, dtype=xp.float64)
        self.correct5 = xp.asarray(correct5, dtype=xp.float64)
        self.first_bad = xp.asarray(self.NEVER, dtype=xp.float64)
        self.count = count                       # images so far: known on the host

    def add(self, loss, logits, labels_dev, step):
        xp, n = self.xp, int(labels_dev.shape[0])
        self.loss_sum = self.loss_sum + loss.astype(xp.float64) * n
        c1, c5 = topk_correct(logits, labels_dev)
        self.correct1 = self.correct1 + c1
        self.correct5 = self.correct5 + c5
        # step where the loss is not finite, NEVER where it is (no branch, no sync)
        finite = xp.isfinite(loss).astype(xp.float64)
        self.first_bad = xp.minimum(self.first_bad, step + (self.NEVER - step) * finite)
        self.count += n

    def read(self):
        """``{"loss", "acc", "top5_acc", "count", "first_bad"}`` as host numbers (one sync)."""
        values = backend.as_numpy(self.xp.stack([self.loss_sum, self.correct1, self.correct5,
                                                 self.first_bad]))
        n = max(self.count, 1)
        bad = None if values[3] >= self.NEVER else int(values[3])
        return {"loss_sum": float(values[0]), "correct1": float(values[1]),
                "correct5": float(values[2]), "count": self.count, "loss": float(values[0] / n),
                "acc": float(values[1] / n), "top5_acc": float(values[2] / n), "first_bad": bad}


def evaluate(model, dataset, pipeline, batch_size=256, ten_crop=False, progress=False,
             desc="evaluate"):
    """Loss, top-1 and top-5 error and the confusion matrix of ``model`` on ``dataset``.

    With ``ten_crop`` each image is scored as in the paper's test procedure:
    the softmax outputs of ten crops (four corners and centre, and their
    reflections) are averaged.  Returns ``{"loss", "top1_error", "top5_error",
    "accuracy", "count", "confusion"}``; ``confusion[i, j]`` counts images of
    class i predicted as j.  A model whose outputs are not finite gets a NaN loss.

    On a GPU the sums stay on the device and are read once, at the end: the
    layers' NaN checks (each a read) are off meanwhile, and the confusion
    matrix is a product of one-hot matrices rather than ``bincount`` (which
    reads the largest value back to size its result).
    """
    xp = model.xp
    was_training = model.training
    checks = [(m, m.check_finite) for _, m in model.named_modules()]
    if xp is not np:
        model.set_check_finite(False)
    model.eval()
    totals = xp.zeros(3, dtype=xp.float64)       # loss sum, top-1 and top-5 correct counts
    confusion = None
    n = 0
    batches = iterate_batches(dataset, batch_size, shuffle=False)
    total = -(-len(dataset) // batch_size)
    try:
        for _, indices in tqdm(batches, total=total, desc=desc, leave=False, unit="batch",
                               disable=_tqdm_disable(progress)):
            images, labels = dataset.get_batch(indices)
            if ten_crop:
                crops = pipeline.ten_crop(images, xp)            # (10, B, C, H, W)
                probs = sum(xp.exp(log_softmax(model.forward(c))) for c in crops) / len(crops)
                scores = xp.log(xp.maximum(probs, 1e-30))
            else:
                scores = log_softmax(model.forward(pipeline(images, train=False, xp=xp)))
            K = scores.shape[1]
            if labels.size and int(labels.max()) >= K:
                raise TinyAlexNetError(f"evaluate: the data set has labels up to "
                                       f"{int(labels.max())} but the model has {K} classes")
            y = xp.asarray(labels)
            loss_sum = -scores[xp.arange(len(labels)), y].astype(xp.float64).sum()
            c1, c5 = topk_correct(scores, y)
            totals = totals + xp.stack([loss_sum, c1.astype(xp.float64), c5.astype(xp.float64)])
            # confusion[i, j] += how many images of class i were predicted as j, i.e.
            # onehot(true)^T @ onehot(predicted); exact, the counts are whole numbers < 2^24.
            classes = xp.arange(K)
            true = (y[:, None] == classes).astype(xp.float32)                # (B, K)
            predicted = (scores.argmax(axis=1)[:, None] == classes).astype(xp.float32)
            if confusion is None:
                confusion = xp.zeros((K, K), dtype=xp.float64)
            confusion += true.T @ predicted
            n += len(labels)
    finally:
        model.train(was_training)
        for m, flag in checks:
            m.check_finite = flag
    if n == 0:
        raise TinyAlexNetError(f"evaluate: the data set {getattr(dataset, 'name', '')!r} is empty")
    values = backend.as_numpy(xp.concatenate([totals, confusion.reshape(-1)]))   # the one read
    loss_sum, correct1, correct5 = values[:3]
    return {"loss": float(loss_sum / n), "top1_error": float(1 - correct1 / n),
            "top5_error": float(1 - correct5 / n), "accuracy": float(correct1 / n),
            "count": n, "confusion": values[3:].reshape(K, K).round().astype(np.int64)}


# --------------------------------------------------------------------- data

class Subset:
    """The images of ``dataset`` at ``indices``, as a data set of its own."""

    def __init__(self, dataset, indices, name=None):
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.classes, self.channels = dataset.classes, dataset.channels
        self.name = name or getattr(dataset, "name", "subset")

    def __len__(self):
        return len(self.indices)

    def get_batch(self, indices):
        return self.dataset.get_batch(self.indices[indices])


def subset(dataset, indices, name=None):
    """``dataset.subset`` where the data set has one (it keeps arrays), else a Subset view."""
    if hasattr(dataset, "subset"):
        return dataset.subset(indices, name)
    return Subset(dataset, indices, name)


def split_validation(dataset, fraction, seed):
    """(train, validation): a random ``fraction`` of ``dataset`` held out, fixed by ``seed``."""
    order = np.random.default_rng([seed, 0xA1]).permutation(len(dataset))
    n_val = int(round(len(dataset) * fraction))
    name = getattr(dataset, "name", "data")
    return (subset(dataset, np.sort(order[n_val:]), name),
            subset(dataset, np.sort(order[:n_val]), name + " (validation)"))


def limit_dataset(dataset, n, seed):
    """At most ``n`` images of ``dataset``, drawn at random (all classes mixed)."""
    if n is None or n >= len(dataset):
        return dataset
    keep = np.random.default_rng([seed, 0x11]).permutation(len(dataset))[:n]
    return subset(dataset, np.sort(keep))


# The side of each model's square input (``model.input_shape[1:]``), known
# before the model is built: image folders are decoded straight to the size
# the model's crops are cut from.
INPUT_SIDE = {"small": 32, "alexnet32": 32, "alexnet": 227}


def dataset_options(name, input_side):
    """Loader options for a model of ``input_side``: image folders are read at the
    paper's canvas for it (256 for 227, 36 for 32), other data sets as stored."""
    return {"size": paper_canvas(input_side)} if name == "folder" else {}


def load_data(config):
    """(train, validation, test) data sets for ``config``."""
    c = config
    options = dataset_options(c.dataset, INPUT_SIDE[c.model])
    train = load_dataset(c.dataset, "train", data_dir=c.data_dir, download=c.download, **options)
    test = load_dataset(c.dataset, "test", data_dir=c.data_dir, download=c.download, **options)
    train, test = limit_dataset(train, c.limit, c.seed), limit_dataset(test, c.limit, c.seed + 1)
    if c.val_fraction > 0:
        train, val = split_validation(train, c.val_fraction, c.seed)
    else:
        val = test
    return train, val, test


# --------------------------------------------------------------------- stopping

class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; ``checkpoint`` is where the state went (or None)."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


class _CtrlC:
    """Catch Ctrl-C while training.  The first press asks the loop to stop after
    the step it is in (the state is then consistent and can be saved); a second
    press interrupts at once.  Only the main thread can own signal handlers;
    elsewhere Ctrl-C arrives as a plain KeyboardInterrupt."""

    def __enter__(self):
        self.requested = False
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._installed:
            previous = self._previous if self._previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)
        return False


def _tqdm_disable(progress):
    """tqdm's ``disable``: None (the default) hides bars when output is not a terminal."""
    return None if progress is None else not progress


# --------------------------------------------------------------------- the trainer

def _print(*args):
    print(*args, flush=True)     # lines reach a log file or a pipe as they happen


HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_top1_error",
                  "val_top5_error", "lr", "time", "images_per_s")


class Trainer:
    """Train a model as ``config`` says, writing checkpoints and history to ``out_dir``.

    ``datasets`` = (train, validation, test) and ``pipeline`` may be given
    (tests, notebooks); otherwise they are built from the config.  ``progress``:
    True/False for the progress bars, None to show them on a terminal only.
    ``log`` receives each summary line.  ``on_step(trainer)`` and
    ``on_epoch(trainer, record)`` are called after every step and epoch.

        trainer = Trainer(make_config(epochs=2), "runs/demo")
        history = trainer.fit()
        print(trainer.evaluate(trainer.test_set)["accuracy"])
    """

    prefetch = True     # read the next batch in a background thread (datasets/prefetch.py)

    def __init__(self, config, out_dir, datasets=None, pipeline=None, progress=None, log=_print,
                 on_step=None, on_epoch=None, _resuming=False):
        check_config(config)
        self.config, self.out_dir = config, os.fspath(out_dir)
        self.progress, self.log = progress, log or (lambda *a, **k: None)
        self.on_step, self.on_epoch = on_step, on_epoch
        if not _resuming and os.path.exists(self.path("last.npz")):
            raise TinyAlexNetError(f"{self.out_dir} already holds a run (last.npz): resume it with "
                                   f"--resume {self.out_dir}, or give another --out")
        self.xp = backend.get_backend(config.backend)     # fails early, with the reason
        self.train_set, self.val_set, self.test_set = datasets or load_data(config)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise TinyAlexNetError(f"data set {config.dataset!r}: {len(self.train_set)} training "
                                   f"and {len(self.val_set)} validation images; need at least one "
                                   "of each (raise --limit or --val-fraction)")
        self.classes = list(self.train_set.classes)
        self.model = get_model(config.model, num_classes=len(self.classes),
                               in_channels=self.train_set.channels, init=config.init,
                               seed=config.seed)
        self.pipeline = pipeline or self._build_pipeline()
        self.model.to(config.backend)
        self.loss_fn = SoftmaxCrossEntropy()
        # Per-layer NaN checks read a value back from the device at every layer:
        # free on NumPy, a stall on the GPU (there the running loss is checked).
        checks = config.backend == "numpy"
        self.model.set_check_finite(checks)
        self.loss_fn.set_check_finite(checks)
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self.epoch = 0          # epochs completed
        self.step = 0           # steps completed in the current epoch
        self.global_step = 0
        self.history = []
        self.best_error = None
        self.partial = None     # running sums of an epoch cut short (from a checkpoint)
        self._ctrl_c = None
        self._meter = None      # the running sums of the epoch in progress
        self._extra_before = None  # dropout counters before the step in progress
        self._critical = False  # inside an update that must not be cut in half
        # How often the running numbers are read back: every step is free on
        # NumPy; on a GPU each read waits for the queue to drain.
        self.read_every = 1 if self.xp is np else config.log_every
        # CuPy compiles each kernel on its first use (cached on disk after): the first
        # epoch a process trains on a GPU is slower, and its log line says so.
        self._compiling = self.xp is not np
        os.makedirs(self.out_dir, exist_ok=True)

    # ---------------------------------------------------------------- building
    def _build_pipeline(self):
        lighting = self.config.lighting and self.train_set.channels == 3
        return Pipeline.for_dataset(self.train_set, self.model.input_shape,
                                    augment=self.config.augment, lighting=lighting)

    def _build_optimizer(self):
        c = self.config
        if c.optimizer == "sgd":
            return SGD(self.model, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return Adam(self.model, lr=c.lr, weight_decay=c.weight_decay)

    def _build_scheduler(self):
        c = self.config
        if c.schedule == "step":
            return StepLR(self.optimizer, c.step_size, gamma=0.1)
        if c.schedule == "plateau":
            return ReduceLROnPlateau(self.optimizer, factor=0.1, patience=c.patience,
                                     max_reductions=c.max_reductions)
        return None

    def path(self, name):
        return os.path.join(self.out_dir, name)

    @property
    def steps_per_epoch(self):
        return -(-len(self.train_set) // self.config.batch_size)

    # ---------------------------------------------------------------- resuming
    @classmethod
    def resume(cls, path, overrides=None, datasets=None, pipeline=None, **kwargs):
        """Continue the run saved at ``path`` (a checkpoint or a run folder).

        ``overrides`` may change config fields that do not alter what was
        learned so far: ``epochs`` (to extend the run), ``backend`` (to move
        it to another device), ``data_dir``.  Everything else comes from the
        checkpoint; other arguments are as for ``Trainer``.
        """
        ck = checkpoint.load(path)
        config = ck.get("config")
        if config is None or ck.get("epoch") is None:
            raise TinyAlexNetError(f"{ck.path}: holds weights only, not a run to resume")
        try:
            config = TrainConfig(**config)
        except TypeError as err:
            raise TinyAlexNetError(f"{ck.path}: the run's settings are not understood ({err})"
                                   ) from None
        for key, value in (overrides or {}).items():
            if value is not None:
                setattr(config, key, value)
        if pipeline is None and ck.get("pipeline") is not None:
            pipeline = Pipeline.from_config(ck["pipeline"])
        trainer = cls(config, os.path.dirname(os.path.abspath(ck.path)), datasets=datasets,
                      pipeline=pipeline, _resuming=True, **kwargs)
        trainer.load_state(ck)
        return trainer

    def load_state(self, ck):
        """Restore weights, optimizer, scheduler, counters and history from a Checkpoint."""
        ck.load_model(self.model, self.config.model)
        ck.load_optimizer(self.optimizer)
        if self.scheduler is not None and ck.get("scheduler"):
            self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
        self.global_step = int(ck["global_step"])
        self.history = list(ck.get("history", []))
        self.best_error = ck.get("best_error")
        self.partial = ck.get("partial")
        if self.step > self.steps_per_epoch:
            raise TinyAlexNetError(f"{ck.path}: saved at step {self.step} of an epoch that has "
                                   f"only {self.steps_per_epoch} steps: the data set changed")

    # ---------------------------------------------------------------- saving
    def state_meta(self, meter=None):
        """Everything but the arrays, for the checkpoint's JSON record."""
        meta = checkpoint.model_meta(self.model, self.config.model)
        partial = None
        if meter is not None and meter.count:
            partial = meter.read()
            partial = {k: partial[k] for k in ("loss_sum", "correct1", "correct5", "count")}
            partial["time"] = self._epoch_time()
        meta.update(
            epoch=self.epoch, step=self.step, global_step=self.global_step,
            steps_per_epoch=self.steps_per_epoch, classes=self.classes,
            config=dataclasses.asdict(self.config),
            pipeline=self.pipeline.config() if hasattr(self.pipeline, "config") else None,
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            extra_state=self.model.get_extra_state(), history=self.history,
            best_error=self.best_error, partial=partial)
        return meta

    def save(self, name="last.npz", meter=None):
        """Write a checkpoint of the current state to ``out_dir/name``; returns its path."""
        return checkpoint.save(self.path(name), self.model, self.state_meta(meter),
                               self.optimizer)

    def write_history(self):
        """history.json and history.csv in ``out_dir`` (after every epoch)."""
        _write_atomic(self.path("history.json"), json.dumps(self.history, indent=1))
        lines = [",".join(HISTORY_FIELDS)]
        for h in self.history:
            lines.append(",".join(_csv_value(h[k]) for k in HISTORY_FIELDS))
        _write_atomic(self.path("history.csv"), "\n".join(lines) + "\n")

    def plot_history(self):
        """history.png in ``out_dir``: the curves so far (at the end of ``fit``)."""
        if self.history:
            plots.plot_history(self.history, self.path("history.png"))

    # ---------------------------------------------------------------- training
    def fit(self):
        """Train until ``config.epochs`` epochs are done; returns the history.

        Raises :class:`Interrupted` after saving on Ctrl-C, and a one-line
        NonFiniteError (loss diverged) or TinyAlexNetError (GPU out of memory)
        without touching the checkpoints already written.
        """
        c = self.config
        self.log(f"training {c.model!r} ({self.model.num_parameters():,} parameters) on "
                 f"{c.dataset}: {len(self.train_set):,} training / {len(self.val_set):,} "
                 f"validation images {'x'.join(map(str, self.model.input_shape))}, "
                 f"{c.optimizer} lr {self.optimizer.lr:g}, batch {c.batch_size}, {c.backend} "
                 f"backend -> {self.out_dir}")
        # Overflow warnings from NumPy would only precede the divergence message.
        with _CtrlC() as ctrl_c, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._ctrl_c = ctrl_c
            stop = None
            try:
                while self.epoch < c.epochs:
                    meter = self._train_epoch()
                    self._end_epoch(meter)
            except KeyboardInterrupt:
                stop = self._interrupted()
            except NonFiniteError as err:
                stop = self._diverged(err)
            except backend.gpu_error_types() as err:
                if not backend.is_out_of_memory(err):
                    raise
                stop = TinyAlexNetError(
                    f"out of GPU memory at epoch {self.epoch + 1}, step {self.step + 1} with "
                    f"batch size {c.batch_size} ({str(err).splitlines()[0]}); try a smaller "
                    f"--batch-size, e.g. {max(1, c.batch_size // 2)}")
            finally:
                self._ctrl_c = None
        if stop is not None:
            try:
                self.plot_history()      # the curves of the epochs that were done
            except Exception as err:     # must not hide why training stopped
                self.log(f"(history.png not drawn: {err})")
            raise stop
        self.plot_history()
        return self.history

    def _train_epoch(self):
        c, xp, model = self.config, self.xp, self.model
        model.train()
        p = self.partial or {}
        meter = RunningMeter(xp, p.get("loss_sum", 0.0), p.get("correct1", 0.0),
                             p.get("correct5", 0.0), p.get("count", 0))
        self._time_before = p.get("time", 0.0)
        self.partial = None
        self._started = time.perf_counter()
        self._counted_from = meter.count
        self._meter = meter
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, unit="batch", leave=False,
                   desc=f"epoch {self.epoch + 1}/{c.epochs}", disable=_tqdm_disable(self.progress))
        batches = prefetch(self.train_set, iterate_batches(
            self.train_set, c.batch_size, c.seed, self.epoch, shuffle=True, start=self.step),
            enabled=self.prefetch)            # the next batch is read while this one trains
        try:
            for step, indices, batch in batches:
                self._train_step(step, indices, meter, batch)
                bar.update(1)
                if (step + 1) % self.read_every == 0:
                    self._show(bar, meter)
                if self.on_step is not None:
                    self.on_step(self)
                if self._ctrl_c is not None and self._ctrl_c.requested:
                    raise KeyboardInterrupt
        finally:
            batches.close()
            bar.close()
        return meter

    def _train_step(self, step, indices, meter, batch=None):
        """One step of SGD on the batch ``indices`` (``batch``: its images and labels, if
        already read); the state advances only at the end."""
        c, xp = self.config, self.xp
        self._extra_before = self.model.get_extra_state()   # dropout counters, for Ctrl-C
        images, labels = batch if batch is not None else self.train_set.get_batch(indices)
        rng = np.random.default_rng([c.seed, self.epoch, step])
        x = self.pipeline(images, train=True, rng=rng, xp=xp)   # one host->device copy
        logits = self.model.forward(x)
        loss = self.loss_fn.forward(logits, labels)          # labels stay on the host
        self.model.backward(self.loss_fn.backward())
        self._critical = True            # from here on, weights and counters change together
        self.optimizer.step()
        meter.add(loss, logits, xp.asarray(labels), self.global_step)
        self.step, self.global_step = step + 1, self.global_step + 1
        self._extra_before = None
        self._critical = False

    def _show(self, bar, meter):
        """Read the running numbers (a sync on the GPU), stop on a non-finite loss, show them."""
        values = meter.read()
        if values["first_bad"] is not None:
            raise _LossNotFinite(values["first_bad"] + 1)
        rate = (meter.count - self._counted_from) / max(time.perf_counter() - self._started, 1e-9)
        bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['acc']:.3f}",
                        img_s=f"{rate:.0f}", refresh=False)
        return values, rate

    def _epoch_time(self):
        return self._time_before + time.perf_counter() - self._started

    def _end_epoch(self, meter):
        """Validate, record, step the schedule, save: the end of one epoch."""
        train, _ = self._show(_NullBar(), meter)
        train_time = self._epoch_time()
        rate = meter.count / max(train_time, 1e-9)
        val = evaluate(self.model, self.val_set, self.pipeline, self.config.eval_batch_size,
                       progress=self.progress, desc="validation")
        if not math.isfinite(val["loss"]):
            raise _LossNotFinite(self.global_step, "the validation loss became NaN or infinite")
        self._critical = True
        record = {"epoch": self.epoch + 1, "train_loss": train["loss"], "train_acc": train["acc"],
                  "val_loss": val["loss"], "val_top1_error": val["top1_error"],
                  "val_top5_error": val["top5_error"], "lr": self.optimizer.lr,
                  "time": round(train_time, 3), "images_per_s": round(rate, 1)}
        self.history.append(record)
        if self.scheduler is not None:
            self.scheduler.step(val["top1_error"])
        is_best = self.best_error is None or val["top1_error"] < self.best_error
        if is_best:
            self.best_error = val["top1_error"]
        self.epoch, self.step, self._meter = self.epoch + 1, 0, None
        self.save("last.npz")
        if is_best:
            self.save("best.npz")
        self._critical = False
        self.write_history()
        c = self.config
        self.log(f"epoch {record['epoch']}/{c.epochs}  train loss {record['train_loss']:.4f} "
                 f"acc {100 * record['train_acc']:.2f}%  val loss {record['val_loss']:.4f} "
                 f"top-1 err {100 * record['val_top1_error']:.2f}% top-5 err "
                 f"{100 * record['val_top5_error']:.2f}%  lr {record['lr']:.3g}  "
                 f"{train_time:.1f} s  {rate:.0f} img/s" + ("  *best" if is_best else "")
                 + ("  (includes CuPy's kernel compilation)" if self._compiling else ""))
        self._compiling = False
        if self.optimizer.lr < record["lr"]:
            self.log(f"validation error stopped improving: learning rate {record['lr']:.3g} -> "
                     f"{self.optimizer.lr:.3g}")
        if self.on_epoch is not None:
            self.on_epoch(self, record)

    # ---------------------------------------------------------------- stopping
    def resume_command(self):
        return f"python -m tinyalexnet train --resume {self.out_dir}"

    def _interrupted(self):
        where = f"epoch {self.epoch + 1}, step {self.step}/{self.steps_per_epoch}"
        if self._critical:
            # Cut inside an update: the state in memory is half old, half new.
            saved = self.path("last.npz") if os.path.exists(self.path("last.npz")) else None
            kept = f"the last checkpoint {saved} is kept" if saved else "nothing was saved"
            return Interrupted(f"interrupted during an update at {where}; {kept}"
                               + (f"; continue with: {self.resume_command()}" if saved else ""),
                               saved)
        if self._extra_before is not None:
            # The step in progress is not counted: give back the dropout masks it drew.
            self.model.set_extra_state(self._extra_before)
        path = self.save("last.npz", self._meter)
        return Interrupted(f"interrupted at {where}: saved {path}; continue with: "
                           f"{self.resume_command()}", path)

    def _diverged(self, err):
        # A layer's own check (NumPy) stops the step in progress; the running
        # loss (GPU) names the first step whose loss was not finite.
        step = getattr(err, "step", self.global_step + 1)
        saved = self.path("last.npz")
        kept = (f"the last good checkpoint {saved} is kept" if os.path.exists(saved)
                else "no checkpoint was written")
        lr = self.optimizer.lr
        return NonFiniteError(f"training diverged at step {step} (epoch {self.epoch + 1}): {err}; "
                              f"try a lower learning rate than {lr:g}, e.g. --lr {lr / 10:g}; "
                              f"{kept}")

    # ---------------------------------------------------------------- testing
    def evaluate(self, dataset=None, ten_crop=False):
        """:func:`evaluate` of the current model on ``dataset`` (default: the test set)."""
        dataset = self.test_set if dataset is None else dataset
        return evaluate(self.model, dataset, self.pipeline, self.config.eval_batch_size,
                        ten_crop=ten_crop, progress=self.progress, desc="test")


class _LossNotFinite(NonFiniteError):
    """The running loss was found NaN or infinite; ``step`` counts from 1 over the run."""

    def __init__(self, step, message="the loss became NaN or infinite"):
        super().__init__(message)
        self.step = step


class _NullBar:
    def set_postfix(self, **kwargs):
        pass


def _csv_value(v):
    return repr(v) if isinstance(v, float) else str(v)


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def default_out_dir(model, dataset, root="runs"):
    """``runs/<model>-<dataset>-<n>`` with the first n not taken yet."""
    n = 1
    while os.path.exists(os.path.join(root, f"{model}-{dataset}-{n}")):
        n += 1
    return os.path.join(root, f"{model}-{dataset}-{n}")
